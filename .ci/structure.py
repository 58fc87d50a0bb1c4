#!/usr/bin/env python3
"""Checks the architecture that the tree is meant to show (docs/architecture.md, "Layers").

1. crates/core's rules layer (wire formats and pure state) imports no tokio, no socket type,
   no socket crate and reads no clock; nor does it reach up into the engine, driver or sim.
2. The engine and the simulator import nothing from the driver (`crate::node`).
3. Every file of crates/core/src is placed in a layer, so a new file cannot slip past 1 and 2.
4. No module of any workspace crate (nor of the benchmark) imports another in a loop. A child module's use of its own
   parent (`use super::Engine` in engine/ticks.rs, which extends `Engine`) is part of the
   parent, as Rust's privacy rules treat it, and is not counted; every other reference is.

5. No `.rs` file outside test files is longer than 700 lines.

Test code (`tests.rs` files, anything after a `#[cfg(test)]` line) is not checked. Prints what
is wrong and exits 1, else prints one line and exits 0.
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORE = ROOT / "crates/core/src"

VOCABULARY = ["config.rs", "error.rs", "view.rs"]
RULES = [
    "identity.rs", "envelope.rs", "profile.rs", "timers.rs", "broadcast.rs", "membership.rs",
    "membership/", "anti_entropy.rs", "discover.rs", "snapshot.rs", "fs.rs", "user_event.rs",
    "fnv.rs", "accusation.rs",
    "query.rs", "role.rs", "lamport.rs", "seal.rs", "seal/",
]
ENGINE = ["engine.rs", "engine/"]
DRIVER = ["node.rs", "node/"]
SIM = ["sim.rs", "sim/"]
FACE = ["lib.rs"]

NOT_IN_RULES = [
    (r"\btokio\b", "tokio"),
    (r"\b(socket2|mio|nix)\b", "a socket/OS crate"),
    (r"\b(UdpSocket|TcpStream|TcpListener|TcpSocket|UnixStream|UnixListener|UnixDatagram)\b",
     "a socket type"),
    (r"\b(Instant|SystemTime)::now\s*\(", "a clock read"),
    (r"\bcrate::(engine|node|sim)\b", "a layer above the rules"),
]
NOT_IN_ENGINE_OR_SIM = [
    (r"\b(crate|shoal_core)::node\b", "the driver (crate::node)"),
]


def code_of(path: pathlib.Path) -> str:
    """The file's non-test code with comments and string literals blanked."""
    if path.name == "tests.rs":
        return ""
    text = path.read_text()
    lines = []
    for line in text.splitlines():
        if line.strip().startswith("#[cfg(test)]"):
            break
        lines.append(line)
    text = "\n".join(lines)
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def matches(rel: str, group: list[str]) -> bool:
    return any(rel == g or (g.endswith("/") and rel.startswith(g)) for g in group)


def check_core_layers(problems: list[str]) -> None:
    for path in sorted(CORE.rglob("*.rs")):
        rel = path.relative_to(CORE).as_posix()
        if matches(rel, VOCABULARY) or matches(rel, RULES):
            banned = NOT_IN_RULES
        elif matches(rel, ENGINE) or matches(rel, SIM):
            banned = NOT_IN_ENGINE_OR_SIM
        elif matches(rel, DRIVER) or matches(rel, FACE):
            continue
        else:
            problems.append(f"crates/core/src/{rel}: in no layer (add it to .ci/structure.py)")
            continue
        code = code_of(path)
        for pattern, what in banned:
            for m in re.finditer(pattern, code):
                line = code.count("\n", 0, m.start()) + 1
                problems.append(f"crates/core/src/{rel}:{line}: imports {what} ({m.group(0)})")


def module_of(src: pathlib.Path, path: pathlib.Path) -> tuple[str, ...]:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts in (["lib"], ["main"]):
        return ()
    return tuple(parts)


def use_paths(code: str) -> list[list[str]]:
    """Every path a `use` tree names, flattened (`use a::{b, c::d}` -> a::b, a::c::d)."""
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        tree = re.sub(r"\s+", "", m.group(1))
        expand(tree, [], paths)
    return paths


def expand(tree: str, prefix: list[str], out: list[list[str]]) -> None:
    if "{" not in tree:
        name = tree.split(" as ")[0]
        out.append(prefix + [p for p in name.split("::") if p and p != "self"])
        return
    head, _, rest = tree.partition("{")
    body = rest[: rest.rindex("}")]
    base = prefix + [p for p in head.split("::") if p]
    depth, item = 0, ""
    for ch in body + ",":
        if ch == "," and depth == 0:
            if item:
                expand(item, base, out)
            item = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        item += ch
    if not body:
        out.append(base)


def resolve(segments, current, modules):
    """The module a path points into, or None (std, another crate)."""
    if not segments:
        return None
    first = segments[0]
    if first == "crate":
        base, rest = (), segments[1:]
    elif first == "super":
        base, rest = current, segments
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    elif first == "self":
        base, rest = current, segments[1:]
    elif current + (first,) in modules:
        base, rest = current, segments
    else:
        return None
    target = base
    for seg in rest:
        if target + (seg,) in modules:
            target = target + (seg,)
        else:
            break
    return target


def check_loops(problems: list[str]) -> None:
    for src in sorted([*ROOT.glob("crates/*/src"), ROOT / "benches/cluster"]):
        if not src.is_dir():
            continue
        files = [
            p for p in src.rglob("*.rs")
            if "bin" not in p.relative_to(src).parts[:1] and p.name != "main.rs"
        ]
        modules = {module_of(src, p) for p in files}
        edges: dict[tuple, set] = {m: set() for m in modules}
        for path in files:
            current = module_of(src, path)
            code = code_of(path)
            paths = use_paths(code)
            # Paths in code too: `crate::x::f()`, `super::X`, and a child's `info::run()`.
            paths += [m.group(0).split("::") for m in
                      re.finditer(r"(?<![\w:])[a-z_]\w*(::\w+)+", code)]
            for segments in paths:
                target = resolve(segments, current, modules)
                if target is None or target == current or target == ():
                    continue
                if current[:-1] == target:  # a child naming its own parent
                    continue
                if target[: len(current)] == current:  # a parent naming its child
                    edges[current].add(target)
                    continue
                edges[current].add(target)
        for cycle in cycles(edges):
            names = " -> ".join("::".join(m) for m in cycle + [cycle[0]])
            problems.append(f"{src.relative_to(ROOT).as_posix()}: import loop {names}")


def cycles(edges):
    """One representative cycle per strongly connected component of more than one module."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
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

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


MAX_LINES = 700


def check_sizes(problems: list[str]) -> None:
    for path in sorted(ROOT.glob("**/*.rs")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("target/", "tests/")) or path.name == "tests.rs" or "/tests/" in rel:
            continue
        if rel.startswith("fuzz/target/"):
            continue
        lines = path.read_text().count("\n")
        if lines > MAX_LINES:
            problems.append(f"{rel}: {lines} lines (split it: at most {MAX_LINES} outside tests)")


def main() -> int:
    problems: list[str] = []
    check_core_layers(problems)
    check_loops(problems)
    check_sizes(problems)
    if problems:
        print("structure: the tree breaks its layering:")
        for p in problems:
            print(f"  {p}")
        return 1
    print(f"structure: rules import no tokio/sockets/clock; engine and sim import no driver; "
          f"no import loops; no file over {MAX_LINES} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
