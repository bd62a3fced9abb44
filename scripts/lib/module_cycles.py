#!/usr/bin/env python3
"""Import cycles between the modules of each crate (scripts/check-layering runs this).

A node is a module that is a file of its own (`a.rs`, `a/mod.rs`, `a/b.rs`); an edge A -> B
means code in A (outside `#[cfg(test)]` blocks and comments) names B by a path: `crate::x::y`,
`super::y`, `self::y` or a bare `y::` for a child module. A parent naming its own child is
the usual way down (`mod b; pub use b::X`) and is not an edge that can close a cycle; a
child naming its parent (`super::X`) is. So a cycle is two modules that are not parent and
child reaching each other, directly or through others: what `store.rs <-> notify.rs` was.
Prints each cycle and exits 1 when there is one.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def module_files(src):
    """Map module path tuple -> file."""
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, src)[:-3].split(os.sep)
            if rel[0] == "bin":
                continue
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel in (["lib"], ["main"]):
                rel = []
            mods[tuple(rel)] = full
    return mods


def strip(text):
    """Drops comments and `#[cfg(test)]` items (a brace-matched block after the attribute)."""
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        j = text.find("{", m.end())
        semi = text.find(";", m.end())
        if semi != -1 and (j == -1 or semi < j):
            i = semi + 1
            continue
        depth = 0
        k = j
        while k < len(text):
            if text[k] == "{":
                depth += 1
            elif text[k] == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        i = k + 1
    out.append(text[i:])
    return "".join(out)


def resolve(mods, path):
    """The longest module-file prefix of `path`."""
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in mods:
            return tuple(path[:n])
    return ()


def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = tree.strip()
    i = tree.find("{")
    if i == -1:
        return [tree] if tree else []
    prefix, inner = tree[:i], tree[i + 1 : tree.rfind("}")]
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[start:k])
            start = k + 1
    parts.append(inner[start:])
    return [prefix + p for part in parts for p in expand(part)]


def paths_in(text):
    """Every `a::b::c` path: `use` trees expanded, and paths written in code."""
    found = []
    for m in re.finditer(r"\buse\s+([^;]*);", text):
        found += [p.split(" as ")[0].strip() for p in expand(m.group(1))]
    found += re.findall(r"\b(?:[a-z_][a-z0-9_]*::)+[A-Za-z_][A-Za-z0-9_]*", text)
    return found


def edges(mods):
    graph = {m: set() for m in mods}
    for mod, f in mods.items():
        text = strip(open(f, encoding="utf-8").read())
        children = {k[len(mod)] for k in mods if len(k) == len(mod) + 1 and k[: len(mod)] == mod}
        for p in paths_in(text):
            parts = p.split("::")
            if parts[0] == "crate":
                target = parts[1:]
            elif parts[0] == "super":
                base = list(mod)
                while parts and parts[0] == "super":
                    base = base[:-1]
                    parts = parts[1:]
                target = base + parts
            elif parts[0] == "self":
                target = list(mod) + parts[1:]
            elif parts[0] in children:
                target = list(mod) + parts
            else:
                continue
            t = resolve(mods, target)
            if t == mod or t[: len(mod)] == mod:
                continue  # itself, or down into its own children
            graph[mod].add(t)
    return graph


def cycles(graph):
    """Strongly connected components with more than one module, where the modules are not
    all on one parent-child line (a child using its ancestors is fine)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    bad = 0
    crates = os.path.join(ROOT, "crates")
    for crate in sorted(os.listdir(crates)):
        src = os.path.join(crates, crate, "src")
        if not os.path.isdir(src):
            continue
        mods = module_files(src)
        graph = edges(mods)
        for comp in cycles(graph):
            bad += 1
            names = ["::".join(c) or "(crate root)" for c in comp]
            print(f"error: import cycle in {crate}: {' <-> '.join(names)}", file=sys.stderr)
    if bad:
        sys.exit(1)
    print("modules: no import cycle between files")


main()
