#!/usr/bin/env python3
"""Checks that the code's shape is what Package.swift and Docs/ARCHITECTURE.md say it is.

1. Package.swift's dependencies of every Swift target equal the modules its files import (system
   modules aside): no declared edge nobody uses, no import that is not declared.
2. The module map at the top of Docs/ARCHITECTURE.md (the lines between `<!-- module-map -->` and
   `<!-- /module-map -->`) has one line per library or executable target, in the form
   "| `Module` | what it owns | `Dep`, `Dep` |", and its third column equals Package.swift's.
   `--print-map` prints that table from Package.swift, keeping the "owns" column of the current map.
3. No file under Sources/ has more than 500 lines, no module more than 2,500.

Usage: scripts/check-structure.py [--print-map]      exit 0 when everything holds, 1 otherwise.
Reads the package with `swift package dump-package` (no build, no network).
"""
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM = {"Glibc", "Musl", "Darwin", "Foundation", "FoundationEssentials", "FoundationNetworking",
          "Dispatch", "XCTest", "Synchronization", "_Concurrency", "Swift", "os"}
MAX_FILE, MAX_MODULE = 500, 2500
IMPORT = re.compile(r"^\s*(?:@[A-Za-z_]+(?:\([^)]*\))?\s+|(?:public|internal|package)\s+)*import\s+(?:(?:struct|class|enum|protocol|func|var|let|typealias)\s+)?([A-Za-z_][A-Za-z0-9_]*)")
MAP_START, MAP_END = "<!-- module-map -->", "<!-- /module-map -->"


def package():
    # SwiftPM leaves an empty TemporaryDirectory.* behind per invocation: give it one of ours.
    with tempfile.TemporaryDirectory(prefix="check-structure-") as tmp:
        out = subprocess.run(["swift", "package", "--package-path", ROOT, "dump-package"], check=True,
                             capture_output=True, text=True, env={**os.environ, "TMPDIR": tmp}).stdout
    return json.loads(out)


def declared(target):
    deps = set()
    for d in target["dependencies"]:
        if "byName" in d:
            deps.add(d["byName"][0])
        elif "target" in d:
            deps.add(d["target"][0])
        elif "product" in d:
            deps.add(d["product"][0])   # the products used here are named as their module
    return deps


def target_dir(t):
    if t.get("path"):
        return os.path.join(ROOT, t["path"])
    base = "Tests" if t["type"] == "test" else "Sources"
    return os.path.join(ROOT, base, t["name"])


def swift_files(d):
    for dirpath, _, files in os.walk(d):
        for f in sorted(files):
            if f.endswith(".swift"):
                yield os.path.join(dirpath, f)


def imports(files):
    found = set()
    for path in files:
        with open(path, encoding="utf-8") as fh:
            in_literal = False   # inside a multi-line string literal (e.g. a Python helper script)
            for line in fh:
                if not in_literal:
                    m = IMPORT.match(line)
                    if m:
                        found.add(m.group(1))
                if line.count('"""') % 2 == 1:
                    in_literal = not in_literal
    return found - SYSTEM


def read_map():
    path = os.path.join(ROOT, "Docs", "ARCHITECTURE.md")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if MAP_START not in text or MAP_END not in text:
        return None, {}
    block = text.split(MAP_START, 1)[1].split(MAP_END, 1)[0]
    rows = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        name = cells[0].strip("`")
        deps = {d.strip().strip("`") for d in cells[2].split(",") if d.strip() and d.strip() != "—"}
        rows[name] = (cells[1], deps)
    return block, rows


def main():
    pkg = package()
    problems = []
    swift_targets = [t for t in pkg["targets"] if t["type"] in ("regular", "executable", "test")
                     and any(True for _ in swift_files(target_dir(t)))]
    for t in swift_targets:
        files = list(swift_files(target_dir(t)))
        want, have = imports(files), declared(t)
        if t["type"] == "test":
            have = have  # test targets are held to the same rule
        for m in sorted(want - have):
            problems.append(f"{t['name']}: imports {m} but Package.swift does not declare it")
        for m in sorted(have - want):
            problems.append(f"{t['name']}: Package.swift declares {m} but no file imports it")
        if t["type"] != "test":
            total = 0
            for f in files:
                n = sum(1 for _ in open(f, encoding="utf-8"))
                total += n
                if n > MAX_FILE:
                    problems.append(f"{os.path.relpath(f, ROOT)}: {n} lines (at most {MAX_FILE})")
            if total > MAX_MODULE:
                problems.append(f"{t['name']}: {total} lines (at most {MAX_MODULE} per module)")

    # Every non-test target, C ones included (they import nothing of ours; their line says "—").
    products = [t for t in pkg["targets"] if t["type"] in ("regular", "executable", "system")]
    block, rows = read_map()
    if "--print-map" in sys.argv:
        print(MAP_START)
        print("| module | owns | imports (Package.swift) |")
        print("|---|---|---|")
        for t in products:
            owns = rows.get(t["name"], ("(describe)", set()))[0]
            deps = sorted(declared(t))
            print(f"| `{t['name']}` | {owns} | {', '.join(f'`{d}`' for d in deps) or '—'} |")
        print(MAP_END)
        return 0
    if block is None:
        problems.append(f"Docs/ARCHITECTURE.md: no module map between {MAP_START} and {MAP_END}")
    else:
        names = {t["name"] for t in products}
        for n in sorted(names - rows.keys()):
            problems.append(f"Docs/ARCHITECTURE.md module map: no line for {n}")
        for n in sorted(rows.keys() - names):
            problems.append(f"Docs/ARCHITECTURE.md module map: {n} is not a target in Package.swift")
        for t in products:
            if t["name"] in rows and rows[t["name"]][1] != declared(t):
                problems.append(f"Docs/ARCHITECTURE.md module map: {t['name']} imports "
                                f"{', '.join(sorted(declared(t)))} per Package.swift, the map says "
                                f"{', '.join(sorted(rows[t['name']][1])) or 'nothing'}")
    for p in problems:
        print("structure: " + p)
    print(f"structure: {len(swift_targets)} Swift targets checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
