#!/usr/bin/env python3
"""How much of a running program's binary is resident, ELF section by section.

    scripts/resident-sections.py PID [BINARY]

Reads /proc/PID/maps and /proc/PID/pagemap (root: the present bit is readable by
anyone, but run it as the process's owner or root) for the mappings of BINARY (default
the process's own executable), maps each resident page back to its file offset and
prints, per section of BINARY (`readelf -SW`), its size and how many KiB of it are
resident. Use it on an unstripped build (`CARGO_PROFILE_RELEASE_STRIP=false`) started
the way `scripts/footprint.sh` starts the agent, to see where file-backed RSS comes from:
code (.text) is resident in 64 KiB blocks around every page touched (the kernel's
fault-around), so a function reached once at start costs a whole block.
"""
import os
import re
import struct
import subprocess
import sys

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_offsets(pid, binary):
    real = os.path.realpath(binary)
    offsets = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pm:
        for line in maps:
            parts = line.split()
            if len(parts) < 6 or os.path.realpath(parts[5]) != real:
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            file_off = int(parts[2], 16)
            for va in range(start, end, PAGE):
                pm.seek(va // PAGE * 8)
                entry = struct.unpack("<Q", pm.read(8))[0]
                if entry >> 63:  # present
                    offsets.add(file_off + (va - start))
    return offsets


def sections(binary):
    out = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)", line)
        if m and m.group(2) != "NOBITS":
            yield m.group(1), int(m.group(4), 16), int(m.group(5), 16)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip().splitlines()[2].strip())
    pid = int(sys.argv[1])
    binary = sys.argv[2] if len(sys.argv) == 3 else os.readlink(f"/proc/{pid}/exe")
    pages = resident_offsets(pid, binary)
    if not pages:
        sys.exit(f"resident-sections: no resident page of {binary} in process {pid}")
    print(f"{'section':24} {'size KiB':>9} {'resident KiB':>13}")
    for name, off, size in sections(binary):
        if size == 0 or name.startswith(".debug") or name in (".symtab", ".strtab"):
            continue
        first, last = off // PAGE, (off + size - 1) // PAGE
        n = sum(1 for p in range(first, last + 1) if p * PAGE in pages)
        print(f"{name:24} {size / 1024:9.1f} {n * PAGE / 1024:13.0f}")
    print(f"{'all mapped pages':24} {'':9} {len(pages) * PAGE / 1024:13.0f}")


if __name__ == "__main__":
    main()
