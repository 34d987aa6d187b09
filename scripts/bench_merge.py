#!/usr/bin/env python3
"""Writes BENCHMARKS.md from the sections scripts/bench.sh just measured, keeping the others.

    bench_merge.py OUT PREAMBLE NOTES KEY=BLOCK_FILE...

The file is a preamble, then one `## KEY: title` block per benchmark section in bench.sh's
order, then `## Notes`, then anything else that was there (`## Soak`, written from soak.sh
runs), kept as it was. A section given here replaces its block; a section not run keeps the
block of the run that measured it (each block names its own date and machine).
"""
import re
import sys

ORDER = ["host", "server", "server_ops", "vmm", "ivshmem", "virtio", "virtio_depth", "nested", "nested_icount", "nested_virtio", "nested_linux_virtio", "guest_linux"]


def blocks(text):
    """The `## ` blocks of text, as (heading, body-with-heading) pairs, in order."""
    parts = re.split(r"(?m)^(?=## )", text)
    return [(p.splitlines()[0], p) for p in parts[1:]]


def main():
    out, preamble_file, notes_file, *fresh = sys.argv[1:]
    try:
        old = open(out, encoding="utf-8").read()
    except FileNotFoundError:
        old = ""
    old_blocks = blocks(old)
    by_key = {}
    rest = []
    for heading, body in old_blocks:
        key = heading[3:].split(":", 1)[0].strip()
        if key in ORDER:
            by_key[key] = body
        elif heading.strip() != "## Notes":
            rest.append(body)
    for item in fresh:
        key, path = item.split("=", 1)
        by_key[key] = open(path, encoding="utf-8").read()
    parts = [open(preamble_file, encoding="utf-8").read().rstrip() + "\n\n"]
    for key in ORDER:
        if key in by_key:
            parts.append(by_key[key].rstrip() + "\n\n")
    parts.append(open(notes_file, encoding="utf-8").read().rstrip() + "\n\n")
    parts.extend(body.rstrip() + "\n\n" for body in rest)
    open(out, "w", encoding="utf-8").write("".join(parts).rstrip() + "\n")


if __name__ == "__main__":
    main()
