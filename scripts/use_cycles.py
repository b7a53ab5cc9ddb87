#!/usr/bin/env python3
"""List `use` cycles between the modules (files) of one crate.

Usage: scripts/use_cycles.py [--no-tests] CRATE_SRC_DIR   (e.g. worker/src, shared/src)

Every file is a module (lib.rs is the crate root, a/mod.rs is `a`, a/b.rs is `a::b`). An edge
A -> B is any `crate::...`, `super::...` or `self::...` path in A (in `use` lines, grouped
`use crate::{..}` trees, or inline `crate::x::y` expressions) that resolves to module B, taken
as the longest module prefix of the path. Edges between a module and its own ancestor are the
module tree, not imports, and are left out. Prints the strongly connected components with more
than one node, first at file level, then with every module folded to its top-level module.
With --no-tests, test code is left out: modules named `tests` (and those under them) and an
inline `#[cfg(test)] mod tests {…}`, taken to run to the end of its file.
"""
import os
import re
import sys


def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            p = os.path.join(root, f)
            rel = os.path.relpath(p, src)[:-3].split(os.sep)
            if rel[-1] in ("lib", "main", "mod"):
                rel = rel[:-1]
            mods[tuple(rel)] = p
    return mods


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def expand_use_trees(text):
    """Yield every path of every `use` item, with grouped trees flattened."""
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        for p in flatten(re.sub(r"\s+", "", m.group(1))):
            yield p


def flatten(tree):
    i = tree.find("{")
    if i < 0:
        return [tree]
    prefix, body = tree[:i], tree[i + 1 : tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for c in body:
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += c == "{"
        depth -= c == "}"
        cur += c
    parts.append(cur)
    out = []
    for part in parts:
        if part:
            out.extend(prefix + q for q in flatten(part))
    return out


def resolve(mod, path, mods):
    segs = [s for s in re.split(r"::", path) if s]
    if not segs:
        return None
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    elif segs[0] in ("super", "self"):
        # a non-mod.rs file `a::b` is module a::b; super is a
        base = list(mod)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
    else:
        return None
    full = base + [re.split(r"\bas\b", s)[0] for s in segs]
    for n in range(len(full), -1, -1):
        if tuple(full[:n]) in mods:
            return tuple(full[:n])
    return None


def edges(mods, no_tests):
    out = {m: set() for m in mods}
    for mod, path in mods.items():
        text = strip_comments(open(path).read())
        if no_tests:
            cut = re.search(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s+tests\s*\{", text)
            if cut:
                text = text[: cut.start()]
        paths = list(expand_use_trees(text))
        paths += re.findall(r"\b(?:crate|super|self)(?:::\w+)+", text)
        for p in paths:
            if not re.match(r"(crate|super|self)\b", p):
                continue
            t = resolve(mod, p, mods)
            if t is None or t == mod:
                continue
            if t == mod[: len(t)] or mod == t[: len(mod)]:
                continue  # ancestor / descendant: the module tree
            out[mod].add(t)
    return out


def sccs(graph):
    index, low, stack, on, res, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
            res.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return [c for c in res if len(c) > 1]


def name(m):
    return "::".join(m) or "crate"


def report(title, graph):
    comps = sccs(graph)
    print(f"{title}: {len(comps)} cycle(s)")
    for c in comps:
        members = sorted(c)
        print("  " + " <-> ".join(name(m) for m in members))
        for a in members:
            for b in sorted(graph[a]):
                if b in c:
                    print(f"    {name(a)} -> {name(b)}")


def main():
    args = sys.argv[1:]
    no_tests = "--no-tests" in args
    src = [a for a in args if a != "--no-tests"][0]
    mods = modules(src)
    if no_tests:
        mods = {m: p for m, p in mods.items() if "tests" not in m}
    g = edges(mods, no_tests)
    print(f"{src}: {len(mods)} modules{' (tests left out)' if no_tests else ''}")
    report("file-level", g)
    top = {}
    for a, bs in g.items():
        ta = a[:1]
        top.setdefault(ta, set())
        for b in bs:
            if b[:1] != ta and b[:1] and ta:
                top[ta].add(b[:1])
    report("top-level", top)


main()
