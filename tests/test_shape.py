"""The code's shape, as issue 17 set it: every module of the installed package (asyncdqn/, envs/, data/) at most
400 lines and every function at most 60, so a long function is split when it is written, not in a redesign."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE_LINES, FUNCTION_LINES = 400, 60


def _sources() -> list[Path]:
    return sorted([*(REPO / "asyncdqn").rglob("*.py"), *(REPO / "envs").rglob("*.py"), *(REPO / "data").rglob("*.py")])


def test_modules_and_functions_stay_small():
    too_long = []
    for path in _sources():
        text = path.read_text()
        name = path.relative_to(REPO)
        if text.count("\n") > MODULE_LINES:
            too_long.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {lines} lines")
    assert len(_sources()) > 30 and not too_long, too_long
