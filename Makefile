# Two commands do all the set-up on a fresh machine:
#   make run    start the whole stack locally (https://localhost:8443)
#   make test   run every test (starts and stops what the tests need)
export CARGO_TARGET_DIR ?= $(HOME)/.cache/mender-rs/target

.PHONY: run test reset create-user lint deps bench bench-inventory coverage cost

run:
	scripts/run.sh

test:
	scripts/test.sh

# Empty all data of the running local stack and recreate the admin user.
reset:
	eval "$$(STACK_NAME=local scripts/stack.sh env)" && cargo run -q -p local-stack --bin mender-local -- reset

# make create-user EMAIL=user@example.com PASSWORD=secret123
create-user:
	eval "$$(STACK_NAME=local scripts/stack.sh env)" && cargo run -q -p local-stack --bin mender-local -- create-user --username "$(EMAIL)" --password "$(PASSWORD)"

lint:
	cargo fmt --check
	cargo clippy --workspace --all-targets -- -D warnings

deps:
	scripts/deps.sh all

# Benchmarks that print their figures (DynamoDB calls per device request, latency).
bench:
	scripts/bench.sh

# The GUI's device lists at 10,000 and 100,000 devices: read units, latency, peak memory.
bench-inventory:
	scripts/bench.sh inventory

# Monthly AWS cost of an idle fleet (1,000 and 100,000 devices) from measured per-request calls.
cost:
	scripts/cost.sh

# Regenerate docs/COVERAGE.md (which Mender operations are served, by which function).
coverage:
	python3 scripts/coverage.py

# cargo fuzz targets of fuzz/, FUZZ_SECONDS each (default 600): executions, crashes.
# The deviceconnect black-box tests SOAK_RUNS times (default 10) under stress-ng on every core.
.PHONY: soak
soak:
	scripts/soak.sh

.PHONY: fuzz
fuzz:
	scripts/fuzz.sh
