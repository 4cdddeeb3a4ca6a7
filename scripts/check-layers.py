#!/usr/bin/python3
"""Checks the include structure of src/ against the layer order of
the source layout (docs/architecture.md): a file includes only headers of its own layer or
below, and no two modules include each other, directly or through a longer
cycle. A module is a .c file and its .h (src/app/shop.c and src/app/shop.h
are the module app/shop). Prints one line per violation and exits 1 when
there is any; `make check-layers` runs it.
"""
import os
import re
import sys

# Lower layers first; folders on one rank may not include each other.
RANKS = {
    "core": 0,
    "redis": 1, "store": 1,
    "net": 2, "tls": 2,
    "http": 3,
    "cache": 4, "filters": 4,
    "proxy": 5,
    "app": 6,
    "proc": 7,
    "": 8,  # src/main.c and src/modules.c, the registration list
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of(rel):
    """'app/shop.c' -> 'app'; 'main.c' -> ''."""
    return rel.split("/", 1)[0] if "/" in rel else ""


def module_of(rel):
    return os.path.splitext(rel)[0]


def scan(src):
    """Yields (file, line number, included path relative to src)."""
    for root, _dirs, files in os.walk(src):
        for name in sorted(files):
            if not name.endswith((".c", ".h")):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src)
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            for m in INCLUDE.finditer(text):
                inc = m.group(1)
                # "x.h" next to the file, or "folder/x.h" from src/.
                local = os.path.normpath(os.path.join(os.path.dirname(rel), inc))
                if os.path.exists(os.path.join(src, inc)):
                    target = os.path.normpath(inc)
                elif os.path.exists(os.path.join(src, local)):
                    target = local
                else:
                    continue  # not a project header (or a generated one)
                line = text.count("\n", 0, m.start()) + 1
                yield rel, line, target


def layer_errors(edges):
    errs = []
    for rel, line, target in edges:
        mine, theirs = layer_of(rel), layer_of(target)
        if mine not in RANKS or theirs not in RANKS:
            errs.append(f"src/{rel}:{line}: includes \"{target}\": folder not in the layer order")
            continue
        if mine == theirs:
            continue
        if RANKS[theirs] > RANKS[mine]:
            errs.append(f"src/{rel}:{line}: includes \"{target}\", a header of layer "
                        f"{theirs or 'main'} above its own layer {mine or 'main'}")
        elif RANKS[theirs] == RANKS[mine]:
            errs.append(f"src/{rel}:{line}: includes \"{target}\": layers {mine} and "
                        f"{theirs} are on one rank and may not include each other")
    return errs


def module_graph(src, edges):
    """Module -> modules it includes. A header with no .c of its own (a
    module's private header such as core/config_impl.h, or a header of
    declarations only) is not a module: what it includes counts as included
    by the file that includes it."""
    direct, where = {}, {}
    for rel, line, target in edges:
        a, b = module_of(rel), module_of(target)
        direct.setdefault(a, set()).add(b)
        where.setdefault((a, b), f"src/{rel}:{line}")

    def has_c(m):
        return os.path.exists(os.path.join(src, m + ".c"))

    graph, at = {}, {}
    for a in direct:
        if not has_c(a):
            continue
        graph.setdefault(a, set())
        todo = [(b, where[(a, b)]) for b in direct[a]]
        seen = set()
        while todo:
            b, loc = todo.pop()
            if b in seen:
                continue
            seen.add(b)
            if has_c(b):
                if b != a:
                    graph[a].add(b)
                    graph.setdefault(b, set())
                    at.setdefault((a, b), loc)
            else:
                todo.extend((c, loc) for c in direct.get(b, ()))
    return graph, at


def cycles(src, edges):
    """Strongly connected components of more than one module (Tarjan)."""
    graph, where = module_graph(src, edges)
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    advanced = True
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    errs = []
    for comp in sorted(out):
        members = set(comp)
        links = sorted(f"{where[(a, b)]} -> {b}" for (a, b) in where
                       if a in members and b in members)
        errs.append("include cycle between modules " + ", ".join(comp) + ": "
                    + "; ".join(links))
    return errs


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    edges = list(scan(src))
    errs = layer_errors(edges) + cycles(src, edges)
    for e in errs:
        print(e)
    if errs:
        print(f"check-layers: {len(errs)} violation(s)", file=sys.stderr)
        return 1
    print(f"check-layers: {len(edges)} includes, layers and modules in order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
