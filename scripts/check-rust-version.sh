#!/usr/bin/env bash
# Fails when Cargo.toml's `rust-version` is lower than what a crate pinned in Cargo.lock
# declares it needs: the manifest must name a toolchain that really builds the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --locked | python3 -c '
import json, sys

def version(text):
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))

metadata = json.load(sys.stdin)
root = next(p for p in metadata["packages"] if p["name"] == "palisade" and p["source"] is None)
declared = root.get("rust_version")
if not declared:
    sys.exit("Cargo.toml sets no rust-version")
needed, name, at = max(
    (version(p["rust_version"]), p["name"], p["version"])
    for p in metadata["packages"]
    if p.get("rust_version")
)
needed_text = ".".join(map(str, needed))
if version(declared) < needed:
    sys.exit(
        f"Cargo.toml says rust-version {declared}, but {name} {at} in Cargo.lock needs "
        f"{needed_text}: raise rust-version (or pin an older {name})"
    )
print(f"rust-version {declared} covers every crate in Cargo.lock "
      f"(the most demanding, {name} {at}, needs {needed_text})")
'
