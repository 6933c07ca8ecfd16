"""The plugin's modules import each other without a cycle (issue 13): hook targets live in ``targets.py``.

Static: reads the imports of every ``sglang_glm_mtp/plugin/*.py`` (module level and inside
functions, where the plugin defers SGLang-heavy imports) and walks the graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sglang_glm_mtp.plugin as plugin

PLUGIN_DIR = Path(plugin.__file__).parent


def _plugin_imports(path: Path) -> set[str]:
    """Sibling plugin modules a file imports (``from .x import``, ``from . import x``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                names.add(node.module.split(".")[0])
            else:
                names.update(alias.name for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PLUGIN_DIR.glob("*.py") if p.stem != "__init__"}
    return {m: _plugin_imports(PLUGIN_DIR / f"{m}.py") & modules for m in modules}


def test_no_import_cycle_between_plugin_modules() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend(path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, path + [node]):
                return True
        state[node] = 2
        return False

    assert not any(visit(m, []) for m in sorted(graph) if state.get(m) is None), f"import cycle: {cycle}"


def test_targets_is_a_leaf_that_the_others_read() -> None:
    graph = _graph()
    assert graph["targets"] == set(), "targets.py is data only"
    readers = {m for m, deps in graph.items() if "targets" in deps}
    assert {"registration", "strict", "canary", "draft_precision"} <= readers
    assert not any("registration" in deps for deps in graph.values()), "nothing imports registration back"


#: The only sub-packages that may import SGLang: the plugin, and the demo's SGLang child (and its GPU emulation).
SGLANG_DOORS = ("plugin", "demo")
PACKAGE_DIR = PLUGIN_DIR.parent


def _sglang_imports(path: Path) -> list[str]:
    """Every ``sglang`` module a file imports: ``import``/``from`` statements anywhere, and
    ``importlib.import_module("sglang...")`` / ``__import__("sglang...")`` with a literal name."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names.append(node.args[0].value)
    return [name for name in names if name == "sglang" or name.startswith("sglang.")]


def test_only_the_plugin_and_the_demo_import_sglang() -> None:
    """SGLang's server code sits behind two doors: ``plugin/`` and ``demo/``. Check, graft, extract and the CLI
    run on a box without SGLang (``bench`` loads SGLang's benchmark clients by name, in ``bench/capture.py``),
    and a new SGLang release is supported by editing those two folders."""
    by_door: dict[str, list[str]] = {door: [] for door in SGLANG_DOORS}
    outside: dict[str, list[str]] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        relative = path.relative_to(PACKAGE_DIR)
        found = _sglang_imports(path)
        if not found:
            continue
        if relative.parts[0] in SGLANG_DOORS:
            by_door[relative.parts[0]] += found
        else:
            outside[str(relative)] = found
    assert outside == {}, f"only {SGLANG_DOORS} may import sglang: {outside}"
    assert all(by_door.values()), f"the check must see the doors' own imports: {by_door}"
