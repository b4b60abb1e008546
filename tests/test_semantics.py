"""SEMANTICS.md kept honest: every promise id there is checked by at least one test
(@pytest.mark.semantics("ID")), and every id a test names is on the page."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def promised() -> set[str]:
    text = (ROOT / "SEMANTICS.md").read_text()
    return set(re.findall(r"^\| `([A-Z]+(?:-[A-Z0-9]+)+)` \|", text, re.M))


def named_by_tests() -> dict[str, list[str]]:
    """id -> the tests whose semantics marker names it (read from the source)."""
    out: dict[str, list[str]] = {}
    for path in (ROOT / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and ast.unparse(dec.func) == "pytest.mark.semantics":
                    for arg in dec.args:
                        assert isinstance(arg, ast.Constant), f"{path.name}: ids are literals"
                        out.setdefault(str(arg.value), []).append(f"{path.name}::{node.name}")
    return out


def test_every_promise_has_a_test_and_every_test_id_a_promise() -> None:
    ids, named = promised(), named_by_tests()
    assert len(ids) >= 20, "SEMANTICS.md lost its table?"
    assert sorted(ids - named.keys()) == [], "promises no test checks"
    assert sorted(named.keys() - ids) == [], "ids that SEMANTICS.md does not have"
