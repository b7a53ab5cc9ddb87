#!/usr/bin/env python3
"""Lists `use` cycles between the modules (files) of one crate's src/ directory.

Usage: scripts/use-cycles.py coordinator/src [--family]; exits 1 when it finds a cycle.

Edges: module A -> module B when A's file names `crate::b...` (a `use` line or a path in the
code) or `super::b` from a submodule. Test modules (`#[cfg(test)] mod tests`) are skipped.
Prints each strongly connected component of more than one module, and one shortest cycle in it.
"""
import os, re, sys
from collections import defaultdict

root = sys.argv[1]
# --family: also count a parent module's use of its child and the child's use of its parent
family = '--family' in sys.argv[2:]
mods = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'):
            continue
        p = os.path.join(d, f)
        rel = os.path.relpath(p, root)[:-3].split(os.sep)
        if rel[-1] in ('mod', 'lib', 'main'):
            rel = rel[:-1]
        mods['::'.join(rel)] = p

def resolve(path):
    """The longest known module prefix of a `a::b::c` path."""
    parts = path.split('::')
    for n in range(len(parts), 0, -1):
        m = '::'.join(parts[:n])
        if m in mods:
            return m
    return None

edges = defaultdict(set)
for m, p in mods.items():
    text = open(p).read()
    cut = re.search(r'#\[cfg\(test\)\]\s*mod tests', text)
    if cut:
        text = text[:cut.start()]
    text = re.sub(r'//[^\n]*', '', text)
    parent = m.rsplit('::', 1)[0] if '::' in m else ''
    for path in re.findall(r'crate::((?:\w+::)*\w+)', text):
        t = resolve(path)
        if t and t != m and (family or (not m.startswith(t + '::') and not t.startswith(m + '::'))):
            edges[m].add(t)
    for path in re.findall(r'\bsuper::((?:\w+::)*\w+)', text):
        full = (parent + '::' + path) if parent else path
        t = resolve(full)
        if t and t != m and (family or (not m.startswith(t + '::') and not t.startswith(m + '::'))):
            edges[m].add(t)
    # `use crate::{a, b::c}` groups
    for group in re.findall(r'use crate::\{([^}]*)\}', text):
        for item in re.split(r',\s*', group):
            t = resolve(item.strip().split('::{')[0].strip())
            if t and t != m and (family or (not m.startswith(t + '::') and not t.startswith(m + '::'))):
                edges[m].add(t)

if family:
    for m, p in mods.items():
        text = open(p).read()
        cut = re.search(r'#\[cfg\(test\)\]\s*mod tests', text)
        if cut:
            text = text[:cut.start()]
        text = re.sub(r'//[^\n]*', '', text)
        for child in [c for c in mods if c.rsplit('::', 1)[0] == m and '::' in c] + [c for c in mods if m == '' and '::' not in c and c]:
            name = child.rsplit('::', 1)[-1]
            if re.search(r'(?<![\w:])(?:self::)?' + name + r'::\w', text):
                edges[m].add(child)

# Tarjan's SCC
index, low, stack, on, sccs = {}, {}, [], set(), []
counter = [0]
def strong(v):
    index[v] = low[v] = counter[0]; counter[0] += 1
    stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        sccs.append(comp)
sys.setrecursionlimit(10000)
for v in sorted(mods):
    if v not in index:
        strong(v)

def shortest_cycle(comp):
    from collections import deque
    best = None
    cs = set(comp)
    for s in sorted(comp):
        prev = {s: None}; q = deque([s]); found = None
        while q and not found:
            v = q.popleft()
            for w in sorted(edges[v]):
                if w not in cs:
                    continue
                if w == s:
                    found = v; break
                if w not in prev:
                    prev[w] = v; q.append(w)
        if found:
            path = [found]
            while prev[path[-1]] is not None:
                path.append(prev[path[-1]])
            path = list(reversed(path)) + [s]
            if best is None or len(path) < len(best):
                best = path
    return best

cycles = [c for c in sccs if len(c) > 1]
print(f"{len(mods)} modules, {sum(len(e) for e in edges.values())} edges, {len(cycles)} cycle group(s)")
for c in cycles:
    print("cycle group:", ", ".join(sorted(c)))
    print("  e.g.", " -> ".join(shortest_cycle(c)))
sys.exit(1 if cycles else 0)
