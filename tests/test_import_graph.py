"""The project's modules import each other without cycles, and the layers point one way.

Read from the source with ``ast`` (every ``import``, at module level or inside a function, with
``TYPE_CHECKING`` ones too: a lazy import is still a dependency), so the check needs nothing
installed and sees imports a run would not reach. ``tests/test_layout.py`` is the runtime half:
the device side imports without the UI stack.

The rules (``docs/architecture.md``):
- no cycle among the project's modules;
- ``edgescope_tracing`` imports none of the other parts; the collector and the TUI import only
  the format; the SDK and the CLI reach the collector and the UI only from the CLI's commands
  and the demo;
- the TUI's model (``state``, ``series``, ``feed``, ``views``, ``chartspec``, ``processes``,
  ``runinfo``, ``alerts``, ``save``) and its sources and discovery never import Textual, the
  App, screens or widgets;
- no part imports another part's private modules or names (``edgescope_tracing._frames``):
  each part offers the others its public surface.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "edgescope_tracing": ROOT / "tracing" / "src" / "edgescope_tracing",
    "edgescope_collector": ROOT / "collector" / "src" / "edgescope_collector",
    "edgescope_tui": ROOT / "tui" / "src" / "edgescope_tui",
    "edgescope": ROOT / "edgescope",
}


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for top, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [top, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imported(module: str, path: Path) -> Iterator[str]:
    """The names ``module`` imports: modules of the project as module names, others as given."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                where = ".".join([*base, *([node.module] if node.module else [])])
            else:
                where = node.module or ""
            for a in node.names:
                sub = f"{where}.{a.name}"
                yield sub if sub in MODULES else where


def _project(name: str) -> str | None:
    """The project module that an imported name lives in (its longest known prefix)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        deps = set()
        for name in _imported(module, path):
            dep = _project(name)
            # a module importing its own package's __init__ (``from . import x``) is no cycle
            if dep is not None and dep != module and not module.startswith(dep + "."):
                deps.add(dep)
        graph[module] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    scc = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        scc.append(w)
                        if w == v:
                            break
                    if len(scc) > 1:
                        found.append(sorted(scc))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_relative_and_lazy_imports() -> None:
    graph = _graph()
    assert "edgescope_tui.sources.base" in graph["edgescope_tui.sources.live"]  # from .base
    assert "edgescope_tui.sources.ssh" in graph["edgescope_tui.sources.live"]  # inside a function


def test_no_import_cycle() -> None:
    cycles = _cycles(_graph())
    assert cycles == [], "modules that import each other:\n" + "\n".join(map(str, cycles))


def _imports_of(prefix: str) -> Iterator[tuple[str, str]]:
    for module, path in MODULES.items():
        if module == prefix or module.startswith(prefix + "."):
            for name in _imported(module, path):
                yield module, name


def _top(name: str) -> str:
    return name.split(".")[0]


def _private_cross_imports(path: Path, top: str) -> Iterator[str]:
    """``X._name`` imports in ``path`` (a module of package ``top``) from another part: a
    private module (``edgescope_tracing._frames``) or a private name of a public one."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            head, *rest = name.split(".")
            if head in PACKAGES and head != top and any(_private(p) for p in rest):
                yield name


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def test_the_private_check_sees_modules_and_names(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "from edgescope_tracing._frames import HEADER_SIZE\n"
        "from edgescope_tracing.reader import _CONTEXT\n"
        "import edgescope_tracing._codec\n"
        "from edgescope_tracing.framing import HEADER_SIZE\n"
        "from ._own import x\n"
        "from edgescope_collector._own import y\n"
    )
    assert list(_private_cross_imports(src, "edgescope_collector")) == [
        "edgescope_tracing._frames.HEADER_SIZE",
        "edgescope_tracing.reader._CONTEXT",
        "edgescope_tracing._codec",
    ]


def test_no_part_imports_another_parts_private_names() -> None:
    """What a part offers the others is its public surface: the collector's store reads the
    format through ``edgescope_tracing.framing``, not ``_frames`` and ``_codec``."""
    wrong = [(m, n) for m, path in MODULES.items() for n in _private_cross_imports(path, _top(m))]
    assert wrong == [], "imports of another part's private modules or names:\n" + "\n".join(
        f"  {m}: {n}" for m, n in wrong
    )


def test_the_parts_depend_one_way() -> None:
    allowed = {
        "edgescope_tracing": set(),
        "edgescope_collector": {"edgescope_tracing"},
        "edgescope_tui": {"edgescope_tracing"},
    }
    wrong = [
        (m, n)
        for part, ok in allowed.items()
        for m, n in _imports_of(part)
        if _top(n) in PACKAGES and _top(n) != part and _top(n) not in ok
    ]
    assert wrong == []


def test_the_sdk_reaches_the_collector_and_ui_only_from_commands_and_the_demo() -> None:
    assert "edgescope.sdk._run" in MODULES and "edgescope.cli.record" in MODULES
    wrong = [
        (m, n)
        for m, n in _imports_of("edgescope")
        if _top(n) in ("edgescope_collector", "edgescope_tui")
        and not m.startswith(("edgescope.cli", "edgescope.demo"))
    ]
    assert wrong == []
    # the SDK (what a training script imports) reaches neither the CLI nor the demo
    sdk = [(m, n) for m, n in _imports_of("edgescope.sdk") if n.startswith("edgescope.cli")]
    assert sdk == []


def test_the_tui_model_and_sources_import_no_ui() -> None:
    model = [
        m
        for m in MODULES
        if m.startswith("edgescope_tui.")
        and m.split(".")[1]
        in (
            *("state", "series", "feed", "views", "chartspec", "processes", "runinfo"),
            *("alerts", "save", "sources", "discovery"),
        )
    ]
    assert "edgescope_tui.state" in model
    ui = ("textual", "edgescope_tui.app", "edgescope_tui.screens", "edgescope_tui.widgets")
    wrong = [
        (m, n)
        for m in model
        for n in _imported(m, MODULES[m])
        if n == "textual" or n.startswith("textual.") or any(n.startswith(u) for u in ui[1:])
    ]
    assert wrong == []


FRAMEWORKS = ("lightning", "pytorch_lightning", "transformers", "accelerate", "keras", "flwr")
"""What the framework hooks (``edgescope.integrations``) import: optional extras, each."""


def test_frameworks_are_imported_only_by_their_hooks_and_never_by_import_edgescope() -> None:
    assert "edgescope.integrations.lightning" in MODULES
    hooks = "edgescope.integrations"
    wrong = [
        (m, n)
        for m, path in MODULES.items()
        if not m.startswith(hooks + ".")
        for n in _imported(m, path)
        if _top(n) in FRAMEWORKS
    ]
    assert wrong == []
    # nothing of the package that a training script imports reaches the hooks
    sdk = [
        (m, n)
        for m, n in [*_imports_of("edgescope.sdk"), *_imports_of("edgescope.cli")]
        if n == hooks or n.startswith(hooks + ".")
    ]
    assert sdk == []
    assert not [n for n in _imported("edgescope", MODULES["edgescope"]) if n.startswith(hooks)]
    # the hooks build on the SDK: not on the CLI, the collector or the UI
    up = [(m, n) for m, n in _imports_of(hooks) if n.startswith("edgescope.cli")]
    assert up == []


def _code_strings(path: Path) -> Iterator[str]:
    """The string constants of a module's code (docstrings left out)."""
    tree = ast.parse(path.read_text(), str(path))
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.value


def test_the_mdns_service_type_is_written_once() -> None:
    """The advert and the browser take ``edgescope_tracing.protocol.MDNS_SERVICE_TYPE``."""
    holders = sorted(
        m for m, path in MODULES.items() if any("_tcp.local" in s for s in _code_strings(path))
    )
    assert holders == ["edgescope_tracing.protocol"]
