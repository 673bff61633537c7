"""The dependency direction of the four parts (``docs/architecture.md``, issue 2).

A Raspberry Pi installs the SDK and the collector and nothing of the UI stack, so neither may
import Textual, asyncssh or cryptography; the CLI reaches the UI only lazily, inside the
subcommand that needs it. The proof runs in a fresh interpreter where those packages cannot be
imported at all (a meta-path finder refuses them), and imports everything else.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from withoutparts import blocking

ROOT = Path(__file__).resolve().parent.parent
UI_STACK = ("textual", "asyncssh", "cryptography")

PROBE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys

    failed = {{}}
    imported = []

    def hook(name):
        # edgescope.integrations.X imports framework X (an optional extra): its own tests
        # import it, where X is installed
        head, _, leaf = name.rpartition(".")
        return head == "edgescope.integrations" and not leaf.startswith("_")

    def load(name):
        try:
            importlib.import_module(name)
            imported.append(name)
        except Exception as e:
            failed[name] = f"{{type(e).__name__}}: {{e}}"

    for top in ("edgescope_tracing", "edgescope", "edgescope_collector"):
        load(top)
        pkg = sys.modules.get(top)
        if pkg is None:
            continue
        for info in pkgutil.walk_packages(pkg.__path__, top + ".", onerror=lambda n: None):
            if info.name.rsplit(".", 1)[-1] != "__main__" and not hook(info.name):
                load(info.name)
    load("edgescope.cli")
    try:
        sys.modules["edgescope.cli"].build_parser()
    except Exception as e:
        failed["edgescope.cli.build_parser()"] = f"{{type(e).__name__}}: {{e}}"
    ui = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED + ("edgescope_tui",))
    print(json.dumps({{"failed": failed, "imported": imported, "ui": ui}}))
    """
)


def test_sdk_collector_and_cli_import_without_the_ui_stack() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", blocking(UI_STACK) + PROBE.format()],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["failed"] == {}, "these need the UI stack (or fail to import):\n" + "\n".join(
        f"  {k}: {v}" for k, v in result["failed"].items()
    )
    assert result["ui"] == []
    imported = set(result["imported"])
    # The walk found the parts' modules, not just the packages.
    assert {"edgescope.cli", "edgescope_tracing.reader", "edgescope_collector"} <= imported
    assert any(m.startswith("edgescope_collector.") for m in imported)


MODEL = ("state", "series", "feed", "views", "chartspec", "processes", "runinfo", "alerts", "save")
"""The TUI's model (``docs/architecture.md``): what the screens draw from, free of Textual."""

MODEL_PROBE = textwrap.dedent(
    """
    import json, sys
    import importlib
    mods = [importlib.import_module("edgescope_tui." + m) for m in {model!r}]
    from edgescope_tracing import TraceReader
    from edgescope_tui.processes import process_rows
    from edgescope_tui.state import fold_all
    from edgescope_tui.views import metric_spec

    with TraceReader({trace!r}) as r:
        state = fold_all(r)
    run = min(state.runs)
    key = state.metric_keys(run)[0]
    spec = metric_spec(state, run, key, None)
    rows = process_rows(state, run, None)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "textual")
    print(json.dumps({{"runs": len(state.runs), "key": key, "title": str(spec.title),
                      "rows": len(rows), "textual": loaded}}))
    """
)


def test_the_tui_model_folds_a_trace_without_textual() -> None:
    """The model is UI-free at run time too: with Textual unimportable, the fold, the chart
    specs and the process table are computed from the example trace."""
    trace = ROOT / "examples" / "h200-mlp-training.est"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            blocking(("textual",)) + MODEL_PROBE.format(model=MODEL, trace=str(trace)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["textual"] == []
    assert result["runs"] >= 1 and result["key"] and result["rows"] >= 1


def _ascent(node: ast.AST) -> int | None:
    """How many folders ``node`` climbs from ``__file__`` (``Path(__file__).parent`` is 1,
    ``.parents[2]`` is 3, ``os.path.dirname(__file__)`` is 1); None if it is no such chain."""
    if isinstance(node, ast.Name) and node.id == "__file__":
        return 0
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Name) and f.id == "Path" and len(node.args) == 1:
            return _ascent(node.args[0])
        if isinstance(f, ast.Attribute) and f.attr in ("resolve", "absolute") and not node.args:
            return _ascent(f.value)
        if isinstance(f, ast.Attribute) and f.attr in ("abspath", "realpath") and node.args:
            return _ascent(node.args[0])
        if isinstance(f, ast.Attribute) and f.attr == "dirname" and node.args:
            up = _ascent(node.args[0])
            return None if up is None else up + 1
    if isinstance(node, ast.Attribute) and node.attr == "parent":
        up = _ascent(node.value)
        return None if up is None else up + 1
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "parents"
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, int)
    ):
        up = _ascent(node.value.value)
        return None if up is None else up + node.slice.value + 1
    return None


OUTSIDE = re.compile(r"(?<![.\w])\.\./|shared/fixtures|/work/")
"""Text in code that names a place beside or above a checkout (``../``, not ``.../``)."""


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _escapes(path: Path) -> list[str]:
    """Where the Python file at ``path`` reaches above the repository or names a place
    outside it."""
    return _escapes_in(path.read_text(), str(path), len(path.relative_to(ROOT).parts) - 1)


def _escapes_in(source: str, name: str, depth: int) -> list[str]:
    """:func:`_escapes` of ``source``, a file ``depth`` folders below the repository's root."""
    tree = ast.parse(source, name)
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        up = _ascent(node)
        # climbing ``up`` from the file leaves its folder at ``up - 1``: above the root past depth
        if up is not None and up - 1 > depth:
            found.append(f"line {getattr(node, 'lineno', '?')}: {up} folders up from __file__")
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docs
            and OUTSIDE.search(node.value)
        ):
            found.append(f"line {node.lineno}: {node.value[:60]!r}")
    return sorted(found)


def _tracked(suffix: str) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    return [ROOT / p for p in out.split("\0") if p.endswith(suffix)]


def test_the_outside_check_sees_a_climb_and_a_name() -> None:
    # a module as tests/probe.py would be (one folder below the root), checked in memory: the
    # test writes nothing into the checkout
    probe = (
        "from pathlib import Path\n"
        "ok = Path(__file__).resolve().parent.parent / 'examples'\n"
        "up = Path(__file__).resolve().parents[2] / 'beside'\n"
        "x = '../beside/a.xml'\n"
    )
    found = _escapes_in(probe, "tests/probe.py", 1)
    assert [f.split(":")[0] for f in found] == ["line 3", "line 4"]


def test_no_file_of_the_project_reads_outside_the_repository() -> None:
    """A fresh clone stands on its own: no code climbs above the checkout from ``__file__`` or
    names ``../`` or the shared fixtures (real data the tests use is in ``tests/fixtures/``);
    the CI script and the configuration name nothing outside either."""
    files = _tracked(".py")
    assert len(files) > 100
    here = Path(__file__).resolve()  # this test names what it looks for
    wrong = {str(p.relative_to(ROOT)): e for p in files if p != here and (e := _escapes(p))}
    assert wrong == {}, wrong
    for p in [ROOT / ".ci" / "run", *_tracked(".toml"), *_tracked(".cfg"), *_tracked(".ini")]:
        text = p.read_text()
        lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
        named = [ln for ln in lines if "shared/" in ln or "/work/" in ln]
        climbs = [ln for ln in lines if OUTSIDE.search(ln) or '/.."' in ln]
        if p.name == "run":  # ``cd "$(dirname "$0")/.."``: the CI script's folder is .ci/
            climbs = [ln for ln in climbs if ln.strip() != 'cd "$(dirname "$0")/.."']
        assert named == [] and climbs == [], (p, named, climbs)


def test_the_trace_format_needs_only_msgpack() -> None:
    """Importing edgescope_tracing loads nothing outside the standard library but msgpack."""
    code = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        "import edgescope_tracing, edgescope_tracing.summary, edgescope_tracing.paths\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before} "
        "- set(sys.stdlib_module_names))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = [m for m in json.loads(proc.stdout) if "cython" not in m]  # msgpack is Cython
    assert loaded == ["edgescope_tracing", "msgpack"]


def requirement_names(reqs: list[str]) -> set[str]:
    names = set()
    for r in reqs:
        name = r
        for sep in "<>=!~[; ":
            name = name.split(sep)[0]
        names.add(name.strip().lower().replace("_", "-"))
    return names


def project(part: str) -> dict[str, object]:
    with open(ROOT / part / "pyproject.toml", "rb") as f:
        data: dict[str, object] = tomllib.load(f)["project"]
    return data


def test_declared_dependencies_point_one_way() -> None:
    tracing = project("tracing")
    assert tracing["name"] == "edgescope-tracing"
    assert requirement_names(tracing["dependencies"]) == {"msgpack"}  # type: ignore[arg-type]
    assert "optional-dependencies" not in tracing

    collector = project("collector")
    assert collector["name"] == "edgescope-collector"
    reqs = list(collector["dependencies"])  # type: ignore[call-overload]
    for extra in dict(collector.get("optional-dependencies", {})).values():  # type: ignore[call-overload]
        reqs += extra
    names = requirement_names(reqs)
    assert "edgescope-tracing" in names
    assert not names & {*UI_STACK, "edgescope-tui", "edgescope"}

    root = project(".")
    assert requirement_names(root["dependencies"]) == {"edgescope-tracing"}  # type: ignore[arg-type]
