"""House rules: llmatic's layout invariants, checked from the source.

Each test states one rule and, when it fails, lists every violation as ``file:line`` with
what to do about it. The source is read with ``ast`` (no llmatic code runs) except where a
rule is about importing: config targets, console scripts, checkpoint classes and ``__all__``
are resolved with importlib, and what ``import llmatic.search`` loads is measured in a fresh
interpreter (one subprocess, one fork per probe).

``LLMATIC_HOUSE_ROOT=/some/copy`` runs the same checks on another tree: a directory holding
``llmatic/``, ``conf/`` and ``pyproject.toml``, e.g. a scratch copy with a deliberate break::

    LLMATIC_HOUSE_ROOT=/tmp/house_break .venv/bin/python -m pytest -q tests/test_house.py

Exceptions live in the dicts below, each with a one-line reason; they start empty except
what the design needs.
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import os
import pickletools
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

_OVERRIDE = os.environ.get("LLMATIC_HOUSE_ROOT")
ROOT = Path(_OVERRIDE or Path(__file__).resolve().parents[1]).resolve()
PACKAGE = "llmatic"
if _OVERRIDE:  # import the copy's llmatic, not the checkout's (before anything imports it)
    sys.path.insert(0, str(ROOT))

# --------------------------------------------------------------------------------------
# The rules' settings and their exceptions
# --------------------------------------------------------------------------------------
#: Where a DictConfig may be read: the Hydra app and the config package.
CONFIG_HOMES = ("llmatic/__main__.py", "llmatic/config/")
#: (file, what) -> why that file may use it outside CONFIG_HOMES. ``what`` is one of
#: omegaconf, hydra, DictConfig, OmegaConf, cfg (a parameter named cfg).
CONFIG_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("llmatic/train/worker.py", "hydra"): (
        "the sandboxed child builds optimizer, scheduler and lightning.Trainer with "
        "hydra.utils.instantiate from the plain dicts of its job (no DictConfig crosses)"
    ),
}

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100
#: Module path ("llmatic/x/y.py") or function ("llmatic.x.y.Class.method") -> reason.
SIZE_EXCEPTIONS: dict[str, str] = {}

#: What ``import llmatic.search`` (and the names it exports) must not load.
HEAVY = ("torch", "lightning", "lightning_fabric", "pytorch_lightning", "hydra", "omegaconf")
#: Exported name of llmatic.search -> why importing it still loads HEAVY modules. A probe
#: that imports such a name is a strict xfail: it fails once fixed, to remove the entry.
PURITY_XFAIL: dict[str, str] = {}

#: Every llmatic class a checkpoint of llmatic 0.1 (commit eda8656, the last before the
#: package layout) pickles, gathered from runs with each temperature, the ablations,
#: archive=cvt and pipeline_generations=true. ``llmatic resume=RUN_DIR`` unpickles them
#: through ``llmatic.rundir``, whose unpickler maps moved modules to today's.
LEGACY_CHECKPOINT_GLOBALS = (
    "llmatic.archives:ElitistPopulation",
    "llmatic.archives:NetworkArchive",
    "llmatic.archives:PromptArchive",
    "llmatic.temperature:AdaptiveTemperature",
    "llmatic.temperature:ConstantTemperature",
    "llmatic.temperature:LinearDecayTemperature",
    "llmatic.search:Plan",
    "llmatic.search:SearchState",
    "llmatic.types:EvalResult",
    "llmatic.types:GenerationRequest",
    "llmatic.types:Operator",
    "llmatic.types:Status",
)


# --------------------------------------------------------------------------------------
# The source, parsed once
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """One module of llmatic."""

    name: str  # dotted: "llmatic.search.engine"; a package's __init__ is "llmatic.search"
    rel: str  # from ROOT: "llmatic/search/engine.py"
    is_package: bool
    text: str
    tree: ast.Module

    @property
    def package(self) -> str:
        """The package this module belongs to (``llmatic/__main__.py``: ``llmatic``)."""
        return self.name if self.is_package else self.name.rpartition(".")[0]


@functools.cache
def sources() -> dict[str, Source]:
    found: dict[str, Source] = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if any(p == "__pycache__" or p.startswith(".") for p in parts):
            continue
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        try:
            tree = ast.parse(text, filename=rel)
        except SyntaxError as exc:
            pytest.fail(f"{rel}:{exc.lineno}: does not parse ({exc.msg}); fix it first")
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = Source(".".join(parts), rel, is_package, text, tree)
    assert found, f"no llmatic sources under {ROOT}"
    return found


def _is_ours(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclass(frozen=True)
class Import:
    """One imported name: ``import a.b`` (name None) or ``from a.b import name``."""

    src: Source
    line: int
    scope: str  # "" at module level, else the enclosing "Class.function"
    module: str  # absolute
    name: str | None
    bound: str  # the local name it binds

    @property
    def where(self) -> str:
        scope = f" (in {self.scope})" if self.scope else ""
        return f"{self.src.rel}:{self.line}{scope}"

    @property
    def text(self) -> str:
        return f"import {self.module}" if self.name is None else (
            f"from {self.module} import {self.name}")


def _absolute(src: Source, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = src.package.split(".")
    if node.level > 1:
        base = base[: len(base) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


@functools.cache
def imports(module: str) -> tuple[Import, ...]:
    """Every import of a module, at any depth (functions, classes, if/try blocks)."""
    src = sources()[module]
    found: list[Import] = []

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    bound = alias.asname or alias.name.partition(".")[0]
                    found.append(Import(src, child.lineno, scope, alias.name, None, bound))
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(src, child)
                for alias in child.names:
                    found.append(Import(src, child.lineno, scope, base, alias.name,
                                        alias.asname or alias.name))
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                visit(child, f"{scope}.{child.name}" if scope else child.name)
            else:
                visit(child, scope)

    visit(src.tree, "")
    return tuple(found)


def _callee(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else (
        func.attr if isinstance(func, ast.Attribute) else None)


@functools.cache
def lazy_map(package: str) -> dict[str, str]:
    """Name -> submodule (relative) from ``lazy_exports(__name__, {...})`` in a package."""
    src = sources().get(package)
    if src is None or not src.is_package:
        return {}
    for node in ast.walk(src.tree):
        if isinstance(node, ast.Call) and _callee(node) == "lazy_exports":
            mapping = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "modules"), None)
            if not isinstance(mapping, ast.Dict):
                continue
            out: dict[str, str] = {}
            for key, value in zip(mapping.keys, mapping.values, strict=True):
                if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                    continue
                if isinstance(value, ast.Tuple | ast.List | ast.Set):
                    for elt in value.elts:
                        if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                            out[elt.value] = key.value
            return out
    return {}


def import_target(imp: Import) -> str | None:
    """The llmatic module an import runs: a submodule, the lazy export's module, or the
    named module / package ``__init__``. None for other projects' modules."""
    mods = sources()
    if not _is_ours(imp.module):
        return None
    if imp.name is None or imp.name == "*":
        return imp.module if imp.module in mods else None
    sub = f"{imp.module}.{imp.name}"
    if sub in mods:
        return sub
    lazy = lazy_map(imp.module).get(imp.name)
    if lazy is not None and f"{imp.module}.{lazy}" in mods:
        return f"{imp.module}.{lazy}"
    return imp.module if imp.module in mods else None


# --------------------------------------------------------------------------------------
# 1. No import cycles
# --------------------------------------------------------------------------------------
def import_graph() -> dict[str, dict[str, list[Import]]]:
    graph: dict[str, dict[str, list[Import]]] = {name: {} for name in sources()}
    for name in graph:
        for imp in imports(name):
            target = import_target(imp)
            if target is not None and target != name:
                graph[name].setdefault(target, []).append(imp)
    return graph


def _strongly_connected(graph: dict[str, dict[str, list[Import]]]) -> list[set[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def find_cycles(graph: dict[str, dict[str, list[Import]]],
                limit: int = 500) -> tuple[list[list[str]], bool]:
    """Every elementary cycle (each once, starting at its smallest module), shortest first;
    at most ``limit`` (the bool says whether there were more)."""
    cycles: list[list[str]] = []
    for component in _strongly_connected(graph):
        if len(component) < 2:
            continue
        order = sorted(component)
        rank = {node: i for i, node in enumerate(order)}
        for start in order:
            allowed = {node for node in component if rank[node] >= rank[start]}
            path, on_path = [start], {start}
            frames = [iter(sorted(t for t in graph[start] if t in allowed))]
            while frames:
                nxt = next(frames[-1], None)
                if nxt is None:
                    frames.pop()
                    on_path.discard(path.pop())
                elif nxt == start:
                    cycles.append([*path, start])
                    if len(cycles) >= limit:
                        return sorted(cycles, key=lambda c: (len(c), c)), True
                elif nxt not in on_path:
                    path.append(nxt)
                    on_path.add(nxt)
                    frames.append(iter(sorted(t for t in graph[nxt] if t in allowed)))
    return sorted(cycles, key=lambda c: (len(c), c)), False


def test_no_import_cycles_among_llmatic_modules():
    graph = import_graph()
    cycles, truncated = find_cycles(graph)
    report = []
    for cycle in cycles:
        lines = [f"  [{len(cycle) - 1}] " + " -> ".join(cycle)]
        for a, b in zip(cycle, cycle[1:], strict=False):
            first, *more = graph[a][b]
            extra = f" (+{len(more)} more)" if more else ""
            lines.append(f"      {first.where}: {first.text}{extra}")
        report.append("\n".join(lines))
    more = "\n  ... and more (only the first 500 are listed)" if truncated else ""
    assert not cycles, (
        f"{len(cycles)} import cycle(s) among llmatic's modules, shortest first (imports "
        "inside functions count). Break each one by moving what both sides need into a lower "
        "module, or by passing it in; an import moved into a function hides a cycle, it does "
        "not remove it:\n" + "\n".join(report) + more
    )


# --------------------------------------------------------------------------------------
# 2. Config machinery only in the Hydra app and llmatic/config/
# --------------------------------------------------------------------------------------
_CONFIG_MODULES = ("omegaconf", "hydra")
_CONFIG_NAMES = ("DictConfig", "OmegaConf")


def _quoted_names(annotation: ast.AST | None) -> Iterator[str]:
    """Names inside the quoted parts of an annotation (``"DictConfig"``); unquoted names are
    ordinary Name nodes and found as such."""
    if annotation is None:
        return
    for sub in ast.walk(annotation):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            try:
                parsed = ast.parse(sub.value, mode="eval")
            except SyntaxError:
                continue
            for name in ast.walk(parsed):
                if isinstance(name, ast.Name):
                    yield name.id
                elif isinstance(name, ast.Attribute):
                    yield name.attr
                elif isinstance(name, ast.Constant) and name is not parsed.body:
                    yield from _quoted_names(name)


def config_uses(src: Source) -> Iterator[tuple[int, str, str]]:
    """(line, what, detail) for each use of omegaconf/hydra/DictConfig/OmegaConf/cfg."""
    for node in ast.walk(src.tree):
        annotations: list[tuple[int, ast.AST | None]] = []
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.partition(".")[0]
                if top in _CONFIG_MODULES:
                    yield node.lineno, top, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            top = node.module.partition(".")[0]
            if top in _CONFIG_MODULES:
                names = ", ".join(a.name for a in node.names)
                yield node.lineno, top, f"from {node.module} import {names}"
        elif isinstance(node, ast.Name) and node.id in _CONFIG_NAMES:
            yield node.lineno, node.id, f"uses {node.id}"
        elif isinstance(node, ast.Attribute) and node.attr in _CONFIG_NAMES:
            yield node.lineno, node.attr, f"uses .{node.attr}"
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            args = node.args
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            name = getattr(node, "name", "lambda")
            for arg in filter(None, every):
                if arg.arg == "cfg":
                    yield arg.lineno, "cfg", f"parameter cfg of {name}()"
                annotations.append((arg.lineno, arg.annotation))
            annotations.append((node.lineno, getattr(node, "returns", None)))
        elif isinstance(node, ast.AnnAssign):
            annotations.append((node.lineno, node.annotation))
        for line, annotation in annotations:
            for used in _quoted_names(annotation):
                if used in _CONFIG_NAMES:
                    yield line, used, f"annotation {used!r}"


def _config_home(rel: str) -> bool:
    return any(rel == home or (home.endswith("/") and rel.startswith(home))
               for home in CONFIG_HOMES)


def test_config_machinery_only_in_the_hydra_app_and_the_config_package():
    report = []
    for src in sources().values():
        if _config_home(src.rel):
            continue
        seen = sorted(set(config_uses(src)))
        uses = [(line, what, detail) for line, what, detail in seen
                if (src.rel, what) not in CONFIG_EXCEPTIONS]
        report += [f"  {src.rel}:{line}: {detail}" for line, _, detail in uses]
    stale = [f"  {rel}: {what}" for rel, what in CONFIG_EXCEPTIONS
             if not any(w == what for _, w, _ in config_uses(sources()[_module_of(rel)]))]
    assert not report, (
        f"{len(report)} use(s) of omegaconf / hydra / DictConfig / OmegaConf / a parameter "
        "named cfg outside llmatic/__main__.py and llmatic/config/. Read the config in "
        "llmatic/config/ and pass plain values or settings dataclasses (llmatic.settings) "
        "in; or, if the design needs it, add (file, what) to CONFIG_EXCEPTIONS with a "
        "one-line reason:\n" + "\n".join(report)
    )
    assert not stale, ("CONFIG_EXCEPTIONS entries that no longer match anything (remove "
                       "them):\n" + "\n".join(stale))


def _module_of(rel: str) -> str:
    by_rel = {src.rel: name for name, src in sources().items()}
    if rel not in by_rel:
        pytest.fail(f"CONFIG_EXCEPTIONS names {rel}, which does not exist: update the entry")
    return by_rel[rel]


# --------------------------------------------------------------------------------------
# 3. Small modules and functions
# --------------------------------------------------------------------------------------
def functions(src: Source) -> Iterator[tuple[str, int, int]]:
    """(qualified name, line, lines) of every def, methods and nested functions included;
    a function's lines run from its ``def`` to its last line."""

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                qualname = f"{prefix}.{child.name}"
                if not isinstance(child, ast.ClassDef):
                    yield qualname, child.lineno, child.end_lineno - child.lineno + 1
                yield from visit(child, qualname)
            else:
                yield from visit(child, prefix)

    yield from visit(src.tree, src.name)


def test_no_module_over_600_lines():
    report = []
    for src in sources().values():
        lines = len(src.text.splitlines())
        if lines > MAX_MODULE_LINES and src.rel not in SIZE_EXCEPTIONS:
            report.append((lines, f"  {src.rel}:1: {lines} lines"))
    assert not report, (
        f"{len(report)} module(s) over {MAX_MODULE_LINES} lines: split each into a package "
        "of modules, one job each (or add the path to SIZE_EXCEPTIONS with a reason):\n"
        + "\n".join(text for _, text in sorted(report, reverse=True))
    )


def test_no_function_over_100_lines():
    report = []
    for src in sources().values():
        for qualname, line, lines in functions(src):
            if lines > MAX_FUNCTION_LINES and qualname not in SIZE_EXCEPTIONS:
                report.append((lines, f"  {src.rel}:{line}: {qualname} is {lines} lines"))
    assert not report, (
        f"{len(report)} function(s) over {MAX_FUNCTION_LINES} lines (methods and nested "
        "functions included): extract the steps into named helpers (or add the qualified "
        "name to SIZE_EXCEPTIONS with a reason):\n"
        + "\n".join(text for _, text in sorted(report, reverse=True))
    )


# --------------------------------------------------------------------------------------
# 4. Names that are looked up at run time resolve
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live():
    """Import llmatic from ROOT (with LLMATIC_HOUSE_ROOT: the copy, not the checkout)."""
    module = importlib.import_module(PACKAGE)
    where = Path(module.__file__).resolve().parent
    if where != ROOT / PACKAGE:
        pytest.fail(f"llmatic imports from {where}, not {ROOT / PACKAGE}: run pytest in a "
                    "fresh process (nothing may import llmatic before this file)")
    return module


def locate(path: str) -> object:
    """``a.b.C`` -> the object, as Hydra's ``_locate`` finds a ``_target_`` (importlib)."""
    parts = path.split(".")
    if not all(parts):
        raise ImportError(f"{path!r} is not a dotted path")
    obj = importlib.import_module(parts[0])
    for i in range(1, len(parts)):
        try:
            obj = getattr(obj, parts[i])
        except AttributeError:
            module = ".".join(parts[: i + 1])
            try:
                obj = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:
                    raise
                raise ImportError(f"{'.'.join(parts[:i])} has no attribute {parts[i]!r} "
                                  f"and there is no module {module}") from None
    return obj


def _unresolved(path: str) -> str | None:
    if not path.startswith(PACKAGE + "."):  # torch, lightning: installed (importing costs 20 s)
        import importlib.util

        top = path.partition(".")[0]
        return None if importlib.util.find_spec(top) is not None else f"no module {top}"
    try:
        obj = locate(path)
    except Exception as exc:  # noqa: BLE001 - any failure is the report
        return f"{type(exc).__name__}: {exc}"
    return None if callable(obj) else f"{type(obj).__name__} is not callable"


def conf_targets() -> Iterator[tuple[str, int, str]]:
    """(file, line, target) of every ``_target_`` under conf/."""

    def walk(node: yaml.Node, rel: str) -> Iterator[tuple[str, int, str]]:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if (isinstance(key, yaml.ScalarNode) and key.value == "_target_"
                        and isinstance(value, yaml.ScalarNode)):
                    yield rel, value.start_mark.line + 1, value.value
                yield from walk(value, rel)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                yield from walk(item, rel)

    for path in sorted((ROOT / "conf").rglob("*.yaml")):
        rel = path.relative_to(ROOT).as_posix()
        for document in yaml.compose_all(path.read_text(encoding="utf-8"),
                                         Loader=yaml.SafeLoader):
            if document is not None:
                yield from walk(document, rel)


def test_every_target_in_conf_resolves(live):
    targets = list(conf_targets())
    assert targets, f"no _target_ found under {ROOT / 'conf'}"
    report = [f"  {rel}:{line}: _target_: {target}: {error}"
              for rel, line, target in targets
              if "${" not in target and (error := _unresolved(target)) is not None]
    assert not report, (
        f"{len(report)} _target_(s) in conf/ do not resolve to a callable (Hydra would fail "
        "at instantiate): point each at the class's current module, or re-export it from "
        "there:\n" + "\n".join(report)
    )


def source_targets() -> Iterator[tuple[str, int, str]]:
    """(file, line, target) of every ``{"_target_": "a.b.C"}`` written in llmatic's code."""
    for src in sources().values():
        for node in ast.walk(src.tree):
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if (isinstance(key, ast.Constant) and key.value == "_target_"
                            and isinstance(value, ast.Constant)
                            and isinstance(value.value, str)):
                        yield src.rel, value.lineno, value.value


def test_every_target_written_in_the_source_resolves(live):
    report = [f"  {rel}:{line}: {target}: {error}" for rel, line, target in source_targets()
              if (error := _unresolved(target)) is not None]
    assert not report, (
        f"{len(report)} _target_ string(s) in llmatic's code do not resolve to a callable: "
        "update each to the class's current module:\n" + "\n".join(report)
    )


def test_every_console_script_resolves(live):
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    scripts = tomllib.loads(text).get("project", {}).get("scripts", {})
    assert scripts, "pyproject.toml has no [project.scripts]"
    report = []
    for name, spec in sorted(scripts.items()):
        line = next((i for i, row in enumerate(text.splitlines(), 1)
                     if re.match(rf'\s*"?{re.escape(name)}"?\s*=', row)), 0)
        module, _, attr = spec.partition(":")
        try:
            obj = importlib.import_module(module)
            for part in attr.split(".") if attr else []:
                obj = getattr(obj, part)
            error = None if attr and callable(obj) else "not a callable (module:function)"
        except Exception as exc:  # noqa: BLE001 - any failure is the report
            error = f"{type(exc).__name__}: {exc}"
        if error:
            report.append(f"  pyproject.toml:{line}: {name} = {spec!r}: {error}")
    assert not report, (
        f"{len(report)} [project.scripts] entr(ies) do not resolve (the installed command "
        "would fail): point each at the function's current module, then reinstall:\n"
        + "\n".join(report)
    )


_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING",
            "SHORT_BINSTRING", "BINSTRING"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def pickled_globals(data: bytes) -> set[str]:
    """``module:qualname`` of every GLOBAL / STACK_GLOBAL in a pickle (nothing is loaded)."""
    found: set[str] = set()
    memo: dict[int, object] = {}
    pushed: list[object] = []  # what each opcode left on top (None: not a string)
    for op, arg, _ in pickletools.genops(data):
        if op.name in _STRINGS:
            pushed.append(arg)
        elif op.name in _GETS:
            pushed.append(memo.get(arg))
        elif op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op.name in _PUTS:
            memo[arg] = pushed[-1] if pushed else None
        elif op.name == "FRAME":
            continue
        elif op.name == "GLOBAL":
            module, name = arg.split(" ", 1)
            found.add(f"{module}:{name}")
            pushed.append(None)
        elif op.name == "STACK_GLOBAL":
            module, name = pushed[-2], pushed[-1]
            assert isinstance(module, str) and isinstance(name, str), "unreadable pickle"
            found.add(f"{module}:{name}")
            pushed.append(None)
        else:
            pushed.append(None)
    return found


def _resolve_global(spec: str) -> str | None:
    module, _, qualname = spec.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 - any failure is the report
        return f"{type(exc).__name__}: {exc}"
    return None


def _public(name: str, *packages: str) -> object:
    """``name`` from the first package (or module) that provides it."""
    for package in packages:
        try:
            return getattr(importlib.import_module(package), name)
        except (ImportError, AttributeError):
            continue
    pytest.fail(f"none of {packages} provides {name}: update this test's lookup")


def test_every_class_a_checkpoint_pickles_resolves(live, tmp_path):
    """A real run (nb201 space, synthetic table, rule-based mutator: no training) writes its
    checkpoint; every global in it must resolve by module and name, as resume will."""
    from hydra import compose, initialize_config_dir

    write_table = _public("write_synthetic_table", "llmatic.nb201", "llmatic.nb201.synthetic",
                          "llmatic.nb201.table")
    run_search = _public("run_search", "llmatic.config", "llmatic.search")
    table = tmp_path / "nb201.csv"
    write_table(table, seed=0)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="search", overrides=[
            "experiment=paper_nb201", f"nb201.table={table}", "nb201.baselines=[]",
            "budget.generations=2", "budget.candidates_per_generation=4",
            "schedule=generational", "pipeline_generations=true", "ablation=prompt_archive_only",
        ])
    run_search(cfg, tmp_path / "run", show_progress=False)
    data = (tmp_path / "run" / "checkpoints" / "latest.pkl").read_bytes()
    names = pickled_globals(data)
    assert any(n.startswith(PACKAGE + ".") for n in names), sorted(names)
    report = [f"  {spec}: {error}" for spec in sorted(names)
              if (error := _resolve_global(spec)) is not None]
    assert not report, (
        f"{len(report)} global(s) in a fresh checkpoint do not resolve (resume would fail): "
        "give each class a stable module and name:\n" + "\n".join(report)
    )


def test_classes_of_checkpoints_written_before_the_layout_still_resolve(live):
    import io

    from llmatic.rundir import _Unpickler  # the unpickler resume uses (tested here on purpose)

    finder = _Unpickler(io.BytesIO(b""))
    report = []
    for spec in LEGACY_CHECKPOINT_GLOBALS:
        module, _, name = spec.partition(":")
        try:
            finder.find_class(module, name)
        except Exception as exc:  # noqa: BLE001 - any failure is the report
            report.append(f"  {spec}: {type(exc).__name__}: {exc}")
    assert not report, (
        f"{len(report)} class(es) that 0.1 checkpoints pickle no longer resolve: "
        "`llmatic resume=RUN_DIR` of such a run fails. Map the old module in "
        "llmatic.rundir.LEGACY_MODULES, or re-export the name from its package:\n"
        + "\n".join(report)
    )


# --------------------------------------------------------------------------------------
# 5. Package interfaces: __all__, and no reaching into another package's privates
# --------------------------------------------------------------------------------------
def _defines_all(src: Source) -> bool:
    for node in src.tree.body:
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, ast.AnnAssign | ast.AugAssign) else [])
        for target in targets:
            names = target.elts if isinstance(target, ast.Tuple | ast.List) else [target]
            if any(isinstance(n, ast.Name) and n.id == "__all__" for n in names):
                return True
    return False


def test_every_package_defines_all():
    mods = sources()
    report = [f"  {src.rel}:1: no __all__" for src in mods.values()
              if src.is_package and not _defines_all(src)]
    packages = {Path(src.rel).parent for src in mods.values() if src.is_package}
    report += [f"  {d.as_posix()}/: has modules but no __init__.py" for d in
               sorted({Path(src.rel).parent for src in mods.values()} - packages)]
    assert not report, (
        f"{len(report)} package(s) without __all__: list the package's public names "
        "(`__all__, __getattr__, __dir__ = lazy_exports(__name__, {...})`, or `__all__ = []` "
        "for a package whose modules are entry points):\n" + "\n".join(report)
    )


def test_every_name_in_all_is_importable_from_its_package(live):
    report = []
    for name, src in sorted(sources().items()):
        if not src.is_package or not _defines_all(src):
            continue
        try:
            package = importlib.import_module(name)
            public = list(package.__all__)
        except Exception as exc:  # noqa: BLE001 - any failure is the report
            report.append(f"  {src.rel}: import {name} fails: {type(exc).__name__}: {exc}")
            continue
        lazy = lazy_map(name)
        for public_name in public:
            try:
                getattr(package, public_name)
            except Exception as exc:  # noqa: BLE001
                home = f" (lazy_exports says {name}.{lazy[public_name]})" if (
                    public_name in lazy) else ""
                report.append(f"  {src.rel}: from {name} import {public_name}{home}: "
                              f"{type(exc).__name__}: {exc}")
    assert not report, (
        f"{len(report)} name(s) in __all__ cannot be imported from their package: fix the "
        "lazy_exports mapping (module -> the names it defines) or the module:\n"
        + "\n".join(report)
    )


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _same_family(a: str, b: str) -> bool:
    """A package and its own subpackages share private names (``llm.rules``, ``.edits``);
    the top-level ``llmatic`` is a family of its own modules only."""
    if a == b:
        return True
    if PACKAGE in (a, b):
        return False
    return a.startswith(b + ".") or b.startswith(a + ".")


def private_imports(src: Source) -> Iterator[tuple[int, str]]:
    """(line, what) for each private name this module takes from another package: imported
    (``from llmatic.x.m import _f``, ``import llmatic.x._m``) or reached through an imported
    module (``m._f`` after ``from llmatic.x import m``)."""
    mods = sources()
    bound: dict[str, str] = {}  # expression -> llmatic module of another package
    for imp in imports(src.name):
        if not _is_ours(imp.module):
            continue
        target = imp.module if imp.name is None else f"{imp.module}.{imp.name}"
        if target in mods:  # a module (or package) was imported
            owner = mods[target].package
        elif imp.module in mods:  # a name from a module
            owner = mods[imp.module].package
        else:
            owner = imp.module.rpartition(".")[0]
        if _same_family(owner, src.package):
            continue
        private = [p for p in target.split(".")[1:] if _is_private(p)]
        if private:
            yield imp.line, f"{imp.text}: {'.'.join(private)} is private to {owner}"
        elif target in mods:
            bound[imp.module if imp.name is None and imp.bound == imp.module.partition(".")[0]
                  else imp.bound] = target
    for node in ast.walk(src.tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            module = bound.get(_dotted(node.value) or "")
            if module is not None:
                yield node.lineno, (f"{_dotted(node.value)}.{node.attr}: {node.attr} is "
                                    f"private to {mods[module].package}")


def test_no_private_name_is_imported_from_another_package():
    report = []
    for src in sources().values():
        report += [f"  {src.rel}:{line}: {what}" for line, what in sorted(private_imports(src))]
    assert not report, (
        f"{len(report)} import(s) of a _private name from another package: make the name "
        "public and export it from its package (`from llmatic.pkg import name`), or move "
        "the code that needs it into that package:\n" + "\n".join(report)
    )


# --------------------------------------------------------------------------------------
# 6. import llmatic.search stays light
# --------------------------------------------------------------------------------------
_PROBE = r"""
import json, os, sys
root, heavy, probes = sys.argv[1], tuple(sys.argv[2].split(",")), json.loads(sys.argv[3])
ours = os.path.join(root, "llmatic") + os.sep

def where(frame):
    name = frame.filename
    if name.startswith(root + os.sep):
        return f"{name[len(root) + 1:]}:{frame.lineno}"
    return f"{name.rpartition('site-packages' + os.sep)[2]}:{frame.lineno}"

def run(probe):
    import importlib, traceback
    first = {}

    class Spy:
        @staticmethod
        def find_spec(name, path=None, target=None):
            top = name.partition(".")[0]
            if top in heavy and top not in first:
                frames = [f for f in traceback.extract_stack()[:-1]
                          if not f.filename.startswith("<")]
                last = max((i for i, f in enumerate(frames) if f.filename.startswith(ours)),
                           default=-1)
                chain = [where(f) for f in frames[: last + 1] if f.filename.startswith(ours)]
                chain += [where(f) for f in frames[last + 1: last + 2]]
                first[top] = chain
            return None

    sys.meta_path.insert(0, Spy)
    error = None
    try:
        package = importlib.import_module(probe["package"])
        for name in probe["names"]:
            getattr(package, name)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
    loaded = sorted({m.partition(".")[0] for m in sys.modules} & set(heavy))
    return {"error": error, "loaded": loaded, "first": {m: first.get(m, []) for m in loaded}}

results, running, waiting = {}, {}, list(enumerate(probes))
out_dir = sys.argv[4]
while waiting or running:
    while waiting and len(running) < max(2, min(4, os.cpu_count() or 1)):
        number, probe = waiting.pop(0)
        out = os.path.join(out_dir, f"{number}.json")
        pid = os.fork()
        if pid == 0:
            try:
                data = run(probe)
            except BaseException as exc:
                data = {"error": repr(exc), "loaded": [], "first": {}}
            with open(out, "w") as fh:
                json.dump(data, fh)
            os._exit(0)
        running[pid] = (probe, out)
    pid, _ = os.wait()
    probe, out = running.pop(pid)
    try:
        with open(out) as fh:
            results[probe["id"]] = json.load(fh)
    except OSError:
        results[probe["id"]] = {"error": "probe crashed", "loaded": [], "first": {}}
print(json.dumps(results))
"""


def _search_probes() -> list[dict]:
    probes = [{"id": "import llmatic.search", "package": "llmatic.search", "names": []}]
    by_module: dict[str, list[str]] = {}
    for name, module in sorted(lazy_map("llmatic.search").items()):
        by_module.setdefault(module, []).append(name)
    for module, names in sorted(by_module.items()):
        probes.append({"id": f"from llmatic.search import {', '.join(names)}",
                       "package": "llmatic.search", "names": names, "module": module})
    return probes


def _probe_params() -> list:
    try:
        probes = _search_probes()
    except BaseException as exc:  # noqa: BLE001 - e.g. a syntax error mid-edit: report it there
        probes = [{"id": f"unreadable source: {exc}", "package": "llmatic.search",
                   "names": []}]
    params = []
    for probe in probes:
        why = [PURITY_XFAIL[n] for n in probe["names"] if n in PURITY_XFAIL]
        marks = [pytest.mark.xfail(strict=True, reason="; ".join(why))] if why else []
        params.append(pytest.param(probe, id=probe["id"].replace(" ", "_"), marks=marks))
    return params


@pytest.fixture(scope="module")
def purity(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """What each probe loads, each in a fresh interpreter (one subprocess that imports
    nothing of llmatic; a fork of it per probe, two at a time)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(ROOT), ",".join(HEAVY), json.dumps(_search_probes()),
         str(tmp_path_factory.mktemp("purity"))],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("probe", _probe_params())
def test_importing_llmatic_search_loads_no_torch_lightning_hydra_or_omegaconf(purity, probe):
    result = purity[probe["id"]]
    assert result["error"] is None, f"{probe['id']} fails: {result['error']}"
    chains = [f"  {module}, first imported via " + " -> ".join(result["first"][module] or ["?"])
              for module in result["loaded"]]
    module = probe.get("module")
    owner = f" (defined in llmatic/search/{module}.py)" if module else ""
    assert not result["loaded"], (
        f"`{probe['id']}`{owner} loads {', '.join(result['loaded'])} in a fresh interpreter. "
        "The search package must stay light (a config error is reported before torch and "
        "Lightning load): import heavy modules inside the function that needs them, or move "
        "that code to the package that owns it (training: llmatic.train; config: "
        "llmatic.config):\n" + "\n".join(chains)
    )


def test_the_longest_first_test_order_names_test_files_that_exist():
    """``conftest.LONGEST_FIRST`` (the order pytest-xdist hands out files) names real files."""
    from conftest import LONGEST_FIRST

    here = Path(__file__).parent
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
    assert [name for name in LONGEST_FIRST if not (here / name).is_file()] == []
