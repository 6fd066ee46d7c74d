#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into OUT/<target>/ (scripts/fuzz.sh calls it).

artifact, tar: real artifacts written by the `mender-artifact` CLI (gzip, lzma, none; module
and rootfs images, v2 and v3, state scripts, meta-data, provides/depends, RSA- and
ECDSA-signed, augmented), their inner header archives, and tar archives of every format
Python's tarfile writes (ustar, GNU, PAX; long names). Without the CLI (scripts/deps.sh
installs it) the artifact seeds are skipped with a notice.
protomsg: the frames mender-connect and mender-cli exchange (shell, file transfer, port
forward, control), msgpack-encoded here.
auth_request, device_keys: auth request bodies with RSA, ECDSA (P-256/384/521) and Ed25519
keys made with openssl, identities, and a real signature.

Usage: seeds.py OUT
"""

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile


def write(out, target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- msgpack (the subset ProtoMsg frames use) -------------------------------------------


def mp(v):
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if 0 <= v < 1 << 16:
            return b"\xcd" + struct.pack(">H", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, str):
        b = v.encode()
        if len(b) < 32:
            return bytes([0xA0 | len(b)]) + b
        return b"\xd9" + bytes([len(b)]) + b if len(b) < 256 else b"\xda" + struct.pack(">H", len(b)) + b
    if isinstance(v, bytes):
        return b"\xc4" + bytes([len(v)]) + v if len(v) < 256 else b"\xc5" + struct.pack(">H", len(v)) + v
    if isinstance(v, list):
        return bytes([0x90 | len(v)]) + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        return bytes([0x80 | len(v)]) + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(v)


def frame(proto, typ, sid=None, props=None, body=None):
    hdr = {"proto": proto, "typ": typ}
    if sid is not None:
        hdr["sid"] = sid
    if props is not None:
        hdr["props"] = props
    f = {"hdr": hdr}
    if body is not None:
        f["body"] = body
    return mp(f)


def protomsg_seeds(out):
    frames = {
        "shell-new": frame(1, "new", props={"terminal_width": 120, "terminal_height": 30, "user_id": "u"}),
        "shell-data": frame(1, "shell", sid="s-1", body=b"ls -l\n"),
        "shell-resize": frame(1, "resize", sid="s-1", props={"terminal_width": 80, "terminal_height": 24}),
        "shell-stop": frame(1, "stop", sid="s-1", props={"status": 1}),
        "ping": frame(0xFFFF, "ping", sid="s-1"),
        "accept": frame(0xFFFF, "accept", sid="s-1", body=mp({"version": 1, "protocols": [1, 2, 3]})),
        "open": frame(0xFFFF, "open", props={"user_id": "u"}, body=mp({"versions": [1]})),
        "file-put": frame(2, "put_file", sid="s-2", props={"path": "/tmp/x", "offset": 0, "uid": 0, "mode": 0o644}),
        "file-chunk": frame(2, "file_chunk", sid="s-2", props={"offset": 4096}, body=bytes(range(64))),
        "file-info": frame(2, "file_info", sid="s-2", body=mp({"path": "/etc/hosts", "size": 120, "mode": 0o644})),
        "file-error": frame(2, "error", sid="s-2", body=mp({"error": "no such file", "message_type": "stat"})),
        "portforward": frame(3, "new", sid="s-3", props={"connection_id": "c1", "remote_host": "localhost", "remote_port": 80, "protocol": "tcp"}),
        "menderclient": frame(4, "check-update", props={"user_id": "u"}),
        "str-body": mp({"hdr": {"proto": 1, "typ": "shell", "sid": None}, "body": "text"}),
        "props-nil": mp({"body": b"x", "hdr": {"proto": 2, "props": None, "typ": None}}),
    }
    for name, data in frames.items():
        write(out, "protomsg", name, data)


# --- keys, auth requests ------------------------------------------------------------------


def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout


def auth_seeds(out, tmp):
    if not shutil.which("openssl"):
        print("seeds: openssl not installed: no key seeds", file=sys.stderr)
        return
    keys = {}
    specs = {
        "rsa": ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
        "p256": ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "p384": ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "p521": ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
        "ed25519": ["genpkey", "-algorithm", "ED25519"],
    }
    for kind, args in specs.items():
        private = os.path.join(tmp, f"{kind}.pem")
        openssl(*args, "-out", private)
        public = openssl("pkey", "-in", private, "-pubout").decode()
        keys[kind] = (private, public)
    identities = [
        {"mac": "00:11:22:33:44:55"},
        {"serial": "SN-1", "mac": "de:ad:be:ef:00:01", "n": 1.5e300, "i": 12345678901234567890},
        {"list": [1, "a", None, True, {"x": "\u00e9\u2028<&>"}]},
    ]
    for kind, (private, public) in keys.items():
        for i, ident in enumerate(identities):
            body = json.dumps(
                {"id_data": json.dumps(ident), "pubkey": public, "tenant_token": ""}
            ).encode()
            write(out, "auth_request", f"{kind}-{i}", body)
        write(out, "device_keys", f"pem-{kind}", b"\x00" + public.encode())
        message = b'{"id_data":"{\\"mac\\":\\"x\\"}"}'
        msg_path = os.path.join(tmp, "msg")
        with open(msg_path, "wb") as f:
            f.write(message)
        if kind == "ed25519":
            sig = openssl("pkeyutl", "-sign", "-inkey", private, "-rawin", "-in", msg_path)
        else:
            sig = openssl("dgst", "-sha256", "-sign", private, msg_path)
        b64 = subprocess.run(["base64", "-w0"], input=sig, capture_output=True, check=True).stdout
        write(out, "device_keys", f"signed-{kind}", b"\x02" + public.encode() + b"\x00" + b64 + b"\x00" + message)
    write(out, "auth_request", "nulls", b'{"id_data": null, "pubkey": null, "tenant_token": null}')
    for i, ident in enumerate(identities):
        write(out, "device_keys", f"identity-{i}", b"\x01" + json.dumps(ident).encode())


# --- artifacts and tar archives ------------------------------------------------------------


def tar_bytes(fmt, entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def structured_entries(entries):
    out = b"\x08"
    for name, data in entries:
        n = name.encode()
        out += bytes([len(n)]) + n + struct.pack("<H", len(data)) + data
    return out


def tar_seeds(out):
    entries = [("version", b'{"format":"mender","version":3}'), ("d/" * 60 + "long-name", b"x" * 700)]
    for fmt, name in [(tarfile.USTAR_FORMAT, "ustar"), (tarfile.GNU_FORMAT, "gnu"), (tarfile.PAX_FORMAT, "pax")]:
        try:
            data = tar_bytes(fmt, entries if fmt != tarfile.USTAR_FORMAT else entries[:1])
        except ValueError:
            continue
        write(out, "tar", f"py-{name}", b"\x04" + data)
        write(out, "tar", f"py-{name}-inner", b"\x00" + data)
    write(out, "tar", "roundtrip", structured_entries([("a", b"hello"), ("\u00e9" * 60, b"long")]))


def artifact_seeds(out, tmp):
    cli = shutil.which("mender-artifact")
    if not cli:
        print("seeds: mender-artifact not installed (scripts/deps.sh): no artifact seeds", file=sys.stderr)
        return
    d = tmp
    with open(os.path.join(d, "payload.bin"), "wb") as f:
        f.write(bytes((i * 7919) % 251 for i in range(3000)))
    with open(os.path.join(d, "second.txt"), "wb") as f:
        f.write(b"second file\n")
    with open(os.path.join(d, "meta.json"), "w") as f:
        f.write('{"a": 1, "nested": {"b": [1, 2]}}')
    with open(os.path.join(d, "aug.json"), "w") as f:
        f.write('{"delta": "yes"}')
    for script in ["ArtifactInstall_Enter_00", "ArtifactCommit_Leave_50_note"]:
        with open(os.path.join(d, script), "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
    rsa = os.path.join(d, "rsa.pem")
    ec = os.path.join(d, "ec.pem")
    openssl("genrsa", "-traditional", "-out", rsa, "2048")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", ec)
    rich = [
        "module-image", "-T", "script", "-n", "release-1.0", "-t", "beaglebone", "-t", "rpi4",
        "-f", "payload.bin", "-f", "second.txt", "--provides", "custom.key:val",
        "--depends", "foo:bar", "-N", "release-0.9", "-g", "prod", "-G", "beta",
        "--clears-provides", "custom.*", "--script", "ArtifactInstall_Enter_00",
        "--script", "ArtifactCommit_Leave_50_note", "--meta-data", "meta.json",
    ]
    variants = {
        "rich-gzip": rich + ["--compression", "gzip"],
        "rich-lzma": rich + ["--compression", "lzma"],
        "rich-none": rich + ["--compression", "none"],
        "rsa-signed": ["module-image", "-T", "single-file", "-n", "s1", "-t", "t1", "-f", "second.txt", "-k", rsa],
        "ec-signed-lzma": rich + ["--compression", "lzma", "-k", ec],
        "augmented": [
            "module-image", "-T", "delta", "-n", "aug-1", "-t", "t1", "-f", "payload.bin",
            "--augment-type", "delta", "--augment-file", "second.txt",
            "--augment-provides", "aug.key:av", "--augment-meta-data", "aug.json", "-k", rsa,
        ],
        "rootfs-v3": ["rootfs-image", "-n", "r3", "-t", "t1", "-f", "payload.bin"],
        "rootfs-v2": ["rootfs-image", "-v", "2", "-n", "r2", "-t", "t1", "-t", "t2", "-f", "payload.bin"],
        "empty-module": ["module-image", "-T", "noop", "-n", "e1", "-t", "t1", "--compression", "none"],
    }
    for name, args in variants.items():
        path = os.path.join(d, name + ".mender")
        r = subprocess.run([cli, "write", *args, "-o", path], cwd=d, capture_output=True)
        if r.returncode != 0:
            print(f"seeds: mender-artifact write {name} failed: {r.stderr.decode()[:200]}", file=sys.stderr)
            continue
        with open(path, "rb") as f:
            data = f.read()
        write(out, "artifact", name + "-raw", b"\x00" + data)
        write(out, "artifact", name + "-fixup", b"\x01" + data)
        write(out, "tar", name, b"\x04" + data)
        with tarfile.open(path) as t:
            for m in t.getmembers():
                member = t.extractfile(m)
                if member is None:
                    continue
                content = member.read()
                modes = {".tar": 0, ".tar.gz": 1, ".tar.xz": 2, ".tar.zst": 3}
                for ext, mode in modes.items():
                    if m.name.endswith(ext) and (m.name.startswith("header") or m.name.startswith("data/")):
                        safe = m.name.replace("/", "_")
                        write(out, "tar", f"{name}-{safe}", bytes([mode]) + content)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        protomsg_seeds(out)
        tar_seeds(out)
        auth_seeds(out, tmp)
        artifact_seeds(out, tmp)
    for target in sorted(os.listdir(out)):
        print(f"seeds: {target}: {len(os.listdir(os.path.join(out, target)))} files")


if __name__ == "__main__":
    main()
