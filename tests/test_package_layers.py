"""The package's rooms depend downward only: checkpoint/ <- graft/ <- cli/, and nothing imports the CLI.

Static: reads every import (module level and inside functions) of every module and resolves
relative imports to the package's top-level rooms, so a new upward import fails here before
it becomes a cycle or drags graft (or SGLang's door, ``plugin/``) into ``check``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sglang_glm_mtp

PACKAGE_DIR = Path(sglang_glm_mtp.__file__).parent
#: What each room may import from the package besides itself. ``errors`` and ``text`` are the shared leaves.
ALLOWED = {
    "checkpoint": {"errors", "text"},
    "graft": {"checkpoint", "errors", "text"},
}


def _room(path: Path) -> str:
    return path.relative_to(PACKAGE_DIR).with_suffix("").parts[0]


def _package_imports(path: Path) -> set[str]:
    """The top-level rooms of ``sglang_glm_mtp`` a file imports (``checkpoint``, ``graft``, ``text``, ...)."""
    parts = path.relative_to(PACKAGE_DIR).with_suffix("").parts
    rooms: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(parts[:len(parts) - node.level])  # the package the dots name, inside sglang_glm_mtp
            target = base + (node.module.split(".") if node.module else [])
            if target:
                rooms.add(target[0])
            else:  # ``from .. import x`` at the package root: each name is a room
                rooms.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sglang_glm_mtp."):
            rooms.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            rooms.update(a.name.split(".")[1] for a in node.names if a.name.startswith("sglang_glm_mtp."))
    return rooms


def _imports_by_room() -> dict[str, dict[str, set[str]]]:
    found: dict[str, dict[str, set[str]]] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        room = _room(path)
        found.setdefault(room, {})[str(path.relative_to(PACKAGE_DIR))] = _package_imports(path) - {room}
    return found


def test_rooms_import_only_downward() -> None:
    by_room = _imports_by_room()
    wrong = {module: sorted(rooms - ALLOWED[room])
             for room in ALLOWED for module, rooms in by_room[room].items() if rooms - ALLOWED[room]}
    assert wrong == {}, f"upward imports: {wrong}"
    assert by_room["graft"]["graft/plan.py"] >= {"checkpoint", "errors"}, "the scan must see graft's own imports"


def test_only_the_cli_imports_the_cli() -> None:
    """Library code logs; the CLI alone talks to the terminal."""
    users = {module for room, modules in _imports_by_room().items() if room != "cli"
             for module, rooms in modules.items() if "cli" in rooms}
    assert users == set()
