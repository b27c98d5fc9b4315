"""The package's floors: every module stands on one, and imports only its own floor and those below.

The table :data:`FLOORS` is the one in ``docs/architecture.md`` (a test keeps them equal). Every
module under ``src/alliance_bayes`` is parsed with :mod:`ast`, not imported: imports at module
level and inside functions both count, since the package imports lazily. Two rules:

* no import from a lower floor into a higher one (any import, lazy or for type checking only),
  except the known ones listed in :data:`KNOWN_UPWARD`, each with its reason;
* no cycle among the imports run when a module is imported (module level, outside
  ``if TYPE_CHECKING:``);
* no cycle through lazy imports either, but for the known ones in :data:`KNOWN_LAZY_CYCLES`
  (a lazy cycle works, but ties the modules into one: neither can be understood or moved alone).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "alliance_bayes"
SOURCE = ROOT / "src" / PACKAGE
DOC = ROOT / "docs" / "architecture.md"

#: Floors from the ground up: (name, module prefixes). A module stands on the floor of its longest
#: matching prefix; ``alliance_bayes`` alone is the package's face (the public API).
FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "ground",
        (
            "alliance_bayes.errors",
            "alliance_bayes.data",
            "alliance_bayes.spec",
            "alliance_bayes.storage",
            "alliance_bayes.provenance",
            "alliance_bayes.sweeps",
            "alliance_bayes.compiled_wrappers",
            "alliance_bayes.rank_diagnostics",
            "alliance_bayes.version",
        ),
    ),
    ("engine", ("alliance_bayes.inference", "alliance_bayes.diagnostics")),
    ("families", ("alliance_bayes.model", "alliance_bayes.report")),
    (
        "pipeline",
        (
            "alliance_bayes.fitting",
            "alliance_bayes.result",
            "alliance_bayes.fit_verbs",
            "alliance_bayes.imputation",
        ),
    ),
    ("studies", ("alliance_bayes.checks", "alliance_bayes.study", "alliance_bayes.benchmark")),
    ("interface", ("alliance_bayes.cli", "alliance_bayes")),
)

#: Upward imports that remain, (importer, imported): reason. Each is a debt, not a licence; a new
#: upward import fails, and so does an entry here that no longer occurs.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}

#: Lazy imports that close a cycle, (importer, imported): reason. Without them (and without the
#: known upward imports) the runtime import graph has no cycle.
KNOWN_LAZY_CYCLES: dict[tuple[str, str], str] = {
    ("alliance_bayes.fit_verbs", "alliance_bayes.fitting"): (
        "update refits through the one pipeline, whose Fit hands its verbs to fit_verbs"
    ),
    ("alliance_bayes.result", "alliance_bayes.fitting"): (
        "a Fit given the study it was fitted to rebuilds its design through the pipeline's design_of"
    ),
}


@dataclass(frozen=True)
class Import:
    """One import of a package module by another."""

    importer: str
    imported: str
    line: int
    module_level: bool
    type_checking: bool

    def __str__(self) -> str:
        where = "module level" if self.module_level else "in a function"
        return f"{self.importer} -> {self.imported} (line {self.line}, {where})"


def module_name(path: Path, source: Path = SOURCE) -> str:
    """``src/alliance_bayes/spec.py`` → ``alliance_bayes.spec`` (packages by folder)."""
    parts = list(path.relative_to(source.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def imports_of(text: str, module: str, modules: Iterable[str], is_package: bool = False):
    """Every import of one of ``modules`` in the source ``text`` of ``module``.

    ``from a.b import c`` is an import of ``a.b.c`` when that is a module, else of ``a.b``;
    relative imports are resolved against ``module``.
    """
    known = set(modules)

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            level = module_level and not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            checking = type_checking or (
                isinstance(child, ast.If) and _is_type_checking(child.test)
            )
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = module if is_package else module.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                names = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    for alias in child.names
                ]
            for name in dict.fromkeys(names):
                target = resolve(name) if name.split(".")[0] == PACKAGE else None
                if target is not None and target != module:
                    found.append(Import(module, target, child.lineno, level, checking))
            visit(child, level, checking)

    visit(ast.parse(text), True, False)
    return found


def package_imports(source: Path = SOURCE) -> list[Import]:
    """Every import between the package's modules."""
    paths = sorted(source.rglob("*.py"))
    modules = [module_name(p, source) for p in paths]
    return [
        found
        for path, module in zip(paths, modules, strict=True)
        for found in imports_of(
            path.read_text(encoding="utf-8"), module, modules, path.name == "__init__.py"
        )
    ]


def floor_of(module: str, floors=FLOORS) -> int:
    """The index of ``module``'s floor (0 = ground): that of its longest matching prefix."""
    best, floor = -1, None
    for index, (_, prefixes) in enumerate(floors):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, floor = len(prefix), index
    if floor is None:
        raise LookupError(f"{module} stands on no floor: add it to FLOORS and docs/architecture.md")
    return floor


def upward(imports: Iterable[Import], floors=FLOORS) -> list[Import]:
    """The imports of a module on a higher floor than the importer's."""
    return [i for i in imports if floor_of(i.imported, floors) > floor_of(i.importer, floors)]


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan 1972,
    doi:10.1137/0201010), each sorted; iterative, so deep graphs need no recursion."""
    graph = {v: sorted(set(ws)) for v, ws in edges.items()}
    for ws in list(graph.values()):
        for w in ws:
            graph.setdefault(w, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = len(index)
                stack.append(v)
                on_stack.add(v)
            if i < len(graph[v]):
                work.append((v, i + 1))
                w = graph[v][i]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return found


def import_graph(imports: Iterable[Import]) -> dict[str, set[str]]:
    """Importer → imported, for the imports run when a module is imported."""
    graph: dict[str, set[str]] = {}
    for i in imports:
        if i.module_level and not i.type_checking:
            graph.setdefault(i.importer, set()).add(i.imported)
    return graph


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return package_imports()


def test_every_module_stands_on_a_floor():
    for path in SOURCE.rglob("*.py"):
        floor_of(module_name(path))


def test_no_cycle_among_module_level_imports(imports):
    found = cycles(import_graph(imports))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_nothing_imports_upward(imports):
    new = [i for i in upward(imports) if (i.importer, i.imported) not in KNOWN_UPWARD]
    names = [name for name, _ in FLOORS]
    assert not new, "imports from a lower floor into a higher one:\n" + "\n".join(
        f"  {i} ({names[floor_of(i.importer)]} -> {names[floor_of(i.imported)]})" for i in new
    )


def test_no_new_cycle_through_lazy_imports(imports):
    known = {*KNOWN_UPWARD, *KNOWN_LAZY_CYCLES}
    graph: dict[str, set[str]] = {}
    for i in imports:
        if not i.type_checking and (i.importer, i.imported) not in known:
            graph.setdefault(i.importer, set()).add(i.imported)
    found = cycles(graph)
    assert not found, "import cycles through lazy imports: " + "; ".join(
        " <-> ".join(c) for c in found
    )


def test_known_lazy_cycles_still_exist(imports):
    seen = {(i.importer, i.imported) for i in imports if not i.type_checking}
    assert not set(KNOWN_LAZY_CYCLES) - seen, set(KNOWN_LAZY_CYCLES) - seen


def test_known_upward_imports_still_exist(imports):
    """A debt paid is struck from the list, so that the list says what is left."""
    seen = {(i.importer, i.imported) for i in upward(imports)}
    assert not set(KNOWN_UPWARD) - seen, set(KNOWN_UPWARD) - seen


def test_the_document_lists_the_same_floors():
    """``docs/architecture.md`` has one table row per floor, ground last, naming its modules."""
    rows = [
        line
        for line in DOC.read_text(encoding="utf-8").splitlines()
        if re.match(r"\|\s*\d+\s*\|", line)
    ]
    documented = []
    for row in rows:
        number, name, modules = (cell.strip() for cell in row.strip().strip("|").split("|")[:3])
        documented.append((int(number), name, tuple(re.findall(r"`([\w.]+)`", modules))))
    expected = [(k + 1, name, prefixes) for k, (name, prefixes) in enumerate(FLOORS)]
    assert sorted(documented) == expected


# --------------------------------------------------------------------------------------------------
# The checker itself finds what it is meant to find, on planted code


_PLANTED = ("alliance_bayes.a", "alliance_bayes.b", "alliance_bayes.c", "alliance_bayes.c.d")
_FLOORS = (("low", ("alliance_bayes.a", "alliance_bayes.c")), ("high", ("alliance_bayes.b",)))


def test_planted_imports_are_found_at_every_level():
    text = (
        "from typing import TYPE_CHECKING\n"
        "import alliance_bayes.c.d\n"
        "from alliance_bayes import b\n"
        "if TYPE_CHECKING:\n"
        "    from alliance_bayes.c import thing\n"
        "def f():\n"
        "    from .c.d import other\n"
    )
    found = imports_of(text, "alliance_bayes.a", _PLANTED)
    assert [(i.imported, i.line, i.module_level, i.type_checking) for i in found] == [
        ("alliance_bayes.c.d", 2, True, False),
        ("alliance_bayes.b", 3, True, False),
        ("alliance_bayes.c", 5, True, True),
        ("alliance_bayes.c.d", 7, False, False),
    ]
    # a lazy import from the low floor into the high one is upward; the reverse is not
    lazy = imports_of("def f():\n    import alliance_bayes.b\n", "alliance_bayes.a", _PLANTED)
    assert upward(lazy, _FLOORS) == lazy
    assert (
        upward(imports_of("import alliance_bayes.a\n", "alliance_bayes.b", _PLANTED), _FLOORS) == []
    )


def test_planted_cycles_are_found():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"e"}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    lazy = imports_of("def f():\n    import alliance_bayes.a\n", "alliance_bayes.b", _PLANTED)
    eager = imports_of("import alliance_bayes.b\n", "alliance_bayes.a", _PLANTED)
    assert cycles(import_graph([*lazy, *eager])) == []
    assert floor_of("alliance_bayes.c.d", _FLOORS) == 0
    with pytest.raises(LookupError):
        floor_of("alliance_bayes.z", _FLOORS)
