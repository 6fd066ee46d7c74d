#!/usr/bin/env python3
"""`make cost`: the monthly AWS cost of an idle fleet (devices polling and sending inventory at
upstream's default intervals), per 1,000 and per 100,000 devices.

Input: the per-request figures `bench-device-request` measured (BENCH_JSON): DynamoDB and SQS
calls by operation and the median latency of the two requests an idle device makes, through
the real router against DynamoDB Local. The memory of each function is read from
infra/template.yaml. Prices are the named constants below (AWS list prices, us-east-1, arm64,
on-demand; update PRICES_DATE with them).

Usage: scripts/cost.py FIGURES.json [DEVICES ...]   (default 1000 100000)
"""

import json
import math
import re
import sys
from pathlib import Path

PRICES_DATE = "2025-01 (us-east-1 list prices)"
API_GATEWAY_HTTP_PER_MILLION = 1.00  # HTTP API, first 300 million requests a month
LAMBDA_REQUESTS_PER_MILLION = 0.20
LAMBDA_ARM_PER_GB_SECOND = 0.0000133334
DYNAMODB_READ_UNITS_PER_MILLION = 0.125  # on-demand read request units
DYNAMODB_WRITE_UNITS_PER_MILLION = 0.625  # on-demand write request units
SQS_STANDARD_PER_MILLION = 0.40
SQS_FIFO_PER_MILLION = 0.50
CLOUDWATCH_LOGS_PER_GB = 0.50  # ingestion
CLOUDWATCH_ALARM_PER_MONTH = 0.10

# Upstream's client defaults (mender.conf): UpdatePollIntervalSeconds, InventoryPollIntervalSeconds.
UPDATE_POLL_SECONDS = 1800
INVENTORY_POLL_SECONDS = 28800
MONTH_SECONDS = 30 * 24 * 3600

# Assumptions where nothing is measured (printed with the result):
# each read call reads items under 4 KB (1 read unit, strongly consistent), each write call
# writes an item under 1 KB (1 write unit); a transaction costs twice.
READ_CALLS = {"GetItem": 1, "Query": 1, "Scan": 1, "BatchGetItem": 1, "TransactGetItems": 2}
WRITE_CALLS = {"PutItem": 1, "UpdateItem": 1, "DeleteItem": 1, "BatchWriteItem": 1,
               "TransactWriteItems": 2}
# Lambda's START, END and REPORT lines per invocation (the functions log nothing else on a
# successful request at the default level).
LOG_BYTES_PER_INVOCATION = 350
# An SQS event source mapping long-polls its queue with 5 connections, one ReceiveMessage per
# 20 s each, whether messages come or not.
IDLE_POLLERS_PER_QUEUE = 5
LONG_POLL_SECONDS = 20

TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "template.yaml"

# The requests of an idle device: (figures key, label, template function, per device per month).
REQUESTS = [
    ("deployments_next", "POST /api/devices/v2/deployments/device/deployments/next (204)",
     "DeploymentsDevicesFunction", MONTH_SECONDS / UPDATE_POLL_SECONDS),
    ("inventory_put", "PUT /api/devices/v1/inventory/device/attributes",
     "InventoryDevicesFunction", MONTH_SECONDS / INVENTORY_POLL_SECONDS),
]


def template_facts(text):
    """MemorySize per function, the queues consumed by functions, the alarms."""
    memory = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^  ([A-Za-z0-9]+):\s*$", line)
        if m:
            current = m.group(1)
        m = re.match(r"^      MemorySize:\s*(\d+)", line)
        if m and current:
            memory[current] = int(m.group(1))
    consumed = len(re.findall(r"^\s+Type: SQS\s*$", text, re.M))
    alarms = len(re.findall(r"Type: AWS::CloudWatch::Alarm", text))
    return memory, consumed, alarms


def units(calls, table):
    return sum(table.get(op, 0) * n for op, n in calls.items())


def per_request(figures, memory_mb):
    dynamodb = figures["dynamodb"]
    sqs_calls = sum(figures["sqs"].values())
    billed_ms = math.ceil(figures["median_ms"])
    return {
        "read_units": units(dynamodb, READ_CALLS),
        "write_units": units(dynamodb, WRITE_CALLS),
        "unknown_calls": sorted(op for op in dynamodb if op not in READ_CALLS and op not in WRITE_CALLS),
        "sqs_calls": sqs_calls,
        "billed_ms": billed_ms,
        "gb_seconds": memory_mb / 1024 * billed_ms / 1000,
        "cost": API_GATEWAY_HTTP_PER_MILLION / 1e6
        + LAMBDA_REQUESTS_PER_MILLION / 1e6
        + LAMBDA_ARM_PER_GB_SECOND * memory_mb / 1024 * billed_ms / 1000
        + DYNAMODB_READ_UNITS_PER_MILLION / 1e6 * units(dynamodb, READ_CALLS)
        + DYNAMODB_WRITE_UNITS_PER_MILLION / 1e6 * units(dynamodb, WRITE_CALLS)
        + SQS_STANDARD_PER_MILLION / 1e6 * sqs_calls
        + CLOUDWATCH_LOGS_PER_GB / 2**30 * LOG_BYTES_PER_INVOCATION,
    }


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    figures = json.loads(Path(sys.argv[1]).read_text())
    fleets = [int(a) for a in sys.argv[2:]] or [1000, 100000]
    memory, queues, alarms = template_facts(TEMPLATE.read_text())

    print(f"prices: {PRICES_DATE}; measured: {figures['requests_measured']} requests each, "
          f"{figures['build']} build against DynamoDB Local (latency is an upper bound for Lambda)")
    print(f"intervals: update poll {UPDATE_POLL_SECONDS} s, inventory {INVENTORY_POLL_SECONDS} s "
          "(upstream's client defaults), 30-day month")
    rows = []
    for key, label, function, per_month in REQUESTS:
        mem = memory.get(function)
        if mem is None:
            sys.exit(f"{function}: no MemorySize in {TEMPLATE}")
        r = per_request(figures[key], mem)
        rows.append((label, per_month, r))
        calls = ", ".join(f"{op} {n:g}" for op, n in sorted(figures[key]["dynamodb"].items())) or "none"
        print(f"  {label}: {per_month:g} per device-month; DynamoDB {calls} "
              f"= {r['read_units']:g} RRU + {r['write_units']:g} WRU; SQS {r['sqs_calls']:g} calls; "
              f"Lambda {function} {mem} MB x {r['billed_ms']} ms = {r['gb_seconds']:.6f} GB-s; "
              f"${r['cost'] * 1e6:.2f} per million requests")
        if r["unknown_calls"]:
            print(f"    not priced (unknown operation): {', '.join(r['unknown_calls'])}")

    idle_receives = queues * IDLE_POLLERS_PER_QUEUE * MONTH_SECONDS / LONG_POLL_SECONDS
    fixed = {
        f"SQS long polling of {queues} consumed queues ({IDLE_POLLERS_PER_QUEUE} pollers, "
        f"{LONG_POLL_SECONDS} s waits: {idle_receives:,.0f} ReceiveMessage)":
            idle_receives * SQS_STANDARD_PER_MILLION / 1e6,
        f"{alarms} CloudWatch alarms": alarms * CLOUDWATCH_ALARM_PER_MONTH,
    }
    print("fixed per month, any fleet size:")
    for label, cost in fixed.items():
        print(f"  {label}: ${cost:.2f}")
    fixed_total = sum(fixed.values())

    for devices in fleets:
        variable = {label: devices * per_month * r["cost"] for label, per_month, r in rows}
        total = sum(variable.values()) + fixed_total
        print(f"{devices:,} devices: ${total:,.2f} per month "
              f"(${sum(variable.values()):,.2f} requests + ${fixed_total:.2f} fixed; "
              f"${total / devices * 1000:,.2f} per 1,000 devices)")
        for label, cost in variable.items():
            print(f"    {label}: ${cost:,.2f}")
    print("not included: auth requests (a device token lives a week), deployments and artifact "
          "downloads (S3 GETs and transfer), storage, the optional deviceconnect container.")


if __name__ == "__main__":
    main()
