#!/usr/bin/env python3
"""Layout gate (issue 13): no Rust source file over MAX_LINES lines, and no module
cycles inside a crate, at two levels: between a crate's top-level modules, and between
the sibling modules of one folder. Function length is clippy's `too_many_lines`
(threshold in clippy.toml), run by .ci/run.

    scripts/layout-check.py [--max-lines N]

Edges are read from `crate::a::b` and `super::x` paths in non-test code (the part of a
file before its first column-0 `#[cfg(test)]`; files named tests.rs or *_tests.rs and
integration tests are skipped). Prints each offence and exits 1 if there is any.
"""
import os, re, sys

MAX_LINES = 800
ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
CRATES = ["proto", "rt", "agent", "coordinator", "tests", "benches"]

def rs_files(d):
    for root, dirs, files in os.walk(d):
        dirs[:] = [x for x in dirs if x not in ("target", ".git")]
        for f in files:
            if f.endswith(".rs"):
                yield os.path.join(root, f)

def module_path(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel

def non_test(text):
    m = re.search(r"^#\[cfg\(test\)\]", text, re.M)
    return text[: m.start()] if m else text

def paths_in(text):
    """Every `crate::...` / `super::...` path, with `use crate::{a, b::c}` groups expanded."""
    out = []
    for m in re.finditer(r"\b(crate|super(?:::super)*)::((?:\w+::)*)(\{|\w+)", text):
        head, mid, last = m.group(1), m.group(2), m.group(3)
        prefix = [head] + [p for p in mid.split("::") if p]
        if last == "{":
            depth, i, start = 1, m.end(), m.end()
            while i < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            for item in text[start : i - 1].split(","):
                item = item.strip()
                if item:
                    out.append(prefix + [p for p in re.split(r"::|\s", item) if p][:1])
        else:
            out.append(prefix + [last])
    return out

def resolve(mod, p):
    if p[0] == "crate":
        return p[1:]
    base = list(mod)
    for part in p:
        if part == "super":
            base = base[:-1]
        else:
            break
    rest = [x for x in p if x != "super"]
    return base + rest

def find_cycle(graph):
    color, stack = {}, []
    def dfs(u):
        color[u] = 1; stack.append(u)
        for v in sorted(graph.get(u, ())):
            if color.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if not color.get(v):
                c = dfs(v)
                if c:
                    return c
        color[u] = 2; stack.pop()
        return None
    for u in sorted(graph):
        if not color.get(u):
            c = dfs(u)
            if c:
                return c
    return None

def main():
    max_lines = MAX_LINES
    if "--max-lines" in sys.argv:
        max_lines = int(sys.argv[sys.argv.index("--max-lines") + 1])
    bad = []
    for crate in CRATES:
        base = os.path.join(ROOT, crate)
        for f in rs_files(base):
            n = sum(1 for _ in open(f, encoding="utf-8"))
            if n > max_lines:
                bad.append(f"{os.path.relpath(f, ROOT)}: {n} lines (at most {max_lines})")
        src = os.path.join(base, "src")
        if not os.path.isdir(src):
            continue
        files = {}
        for f in rs_files(src):
            name = os.path.basename(f)
            if name == "tests.rs" or name.endswith("_tests.rs") or f"{os.sep}bin{os.sep}" in f:
                continue
            files[tuple(module_path(src, f))] = non_test(open(f, encoding="utf-8").read())
        known = set(files)
        def owner(target):
            # the longest known module that prefixes `target`
            for k in range(len(target), 0, -1):
                if tuple(target[:k]) in known:
                    return tuple(target[:k])
            return None
        top, siblings = {}, {}
        for mod, text in files.items():
            for p in paths_in(text):
                tgt = owner(resolve(list(mod), p))
                if not tgt or not mod or tgt == mod:
                    continue
                if tgt[0] != mod[0]:
                    top.setdefault(mod[0], set()).add(tgt[0])
                # siblings: same parent folder, both below it
                k = 0
                while k < min(len(mod), len(tgt)) and mod[k] == tgt[k]:
                    k += 1
                if k < len(mod) and k < len(tgt) and k > 0:
                    parent = mod[:k]
                    siblings.setdefault(parent, {}).setdefault(mod[k], set()).add(tgt[k])
        c = find_cycle(top)
        if c:
            bad.append(f"{crate}: module cycle " + " -> ".join(c))
        for parent, g in sorted(siblings.items()):
            c = find_cycle(g)
            if c:
                bad.append(f"{crate}::{'::'.join(parent)}: module cycle " + " -> ".join(c))
    for b in bad:
        print("layout:", b)
    if bad:
        sys.exit(1)
    print("layout: ok")

main()
