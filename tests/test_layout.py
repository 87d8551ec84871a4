"""The package's house rules that a reader would otherwise have to trust: no import circle
(a stage imports only stages before it, and a type never travels through an unrelated
module). Every import counts, a function's own included: the circle once ran
engines -> replay -> taps -> pipeline -> engines through one lazy import."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pete_osc"


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(name: str, path: Path, known: dict) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import graph's circles (strongly connected parts of two or more modules)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert cycles(graph) == []


def test_the_check_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_house_stays_in_shape():
    """The targets issue 24 set: the stages are folders (few modules at the top), no file
    a reader cannot take in at once, and no MIDI status byte built or read by hand (mido
    does that) outside the MIDI clock reader."""
    import re

    known = modules()
    top = [n for n, p in known.items() if n.count(".") == 1 and p.name != "__init__.py"]
    assert len(top) <= 8, sorted(top)
    long = {n: len(p.read_text().splitlines()) for n, p in known.items()}
    assert {n: k for n, k in long.items() if k > 400} == {}
    status = re.compile(r"\b0x[89A-Ea-e]0\b|&\s*0x[Ff]0\b|&\s*0x0[Ff]\b")
    by_hand = [f"{n}:{i}" for n, p in known.items() if n != "pete_osc.inputs.clock"
               for i, line in enumerate(p.read_text().splitlines(), 1) if status.search(line)]
    assert by_hand == []


def test_the_readme_map_names_every_module():
    """README's Layout names each stage's folder and every module in it, and no module
    that is gone: a newcomer finds any stage's file from the map."""
    import re

    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    named = set(re.findall(r"`([a-z_0-9]+\.(?:py|html))`", layout))
    files = {p.name for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    files |= {p.name for p in PACKAGE.rglob("*.html")}
    assert files - named == set()
    for folder in {p.parent.name for p in PACKAGE.rglob("__init__.py")} - {"pete_osc"}:
        assert f"`{folder}/`" in layout, folder
