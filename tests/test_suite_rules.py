"""Rules the suite keeps about itself: every pytest.raises says which error it expects (issue 14)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imprecise_raises(source: str) -> list[int]:
    """Lines of ``with pytest.raises(...)`` blocks that give no ``match=`` and bind no name read later
    in the same function (a test that checks ``info.value`` or a status code itself)."""
    tree = ast.parse(source)
    found: list[int] = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if not isinstance(node, ast.With):
                continue
            for item in node.items:
                call = item.context_expr
                if not (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "raises"
                    and isinstance(call.func.value, ast.Name)
                    and call.func.value.id == "pytest"
                ):
                    continue
                if any(k.arg == "match" for k in call.keywords):
                    continue
                target = item.optional_vars
                if isinstance(target, ast.Name) and any(
                    isinstance(n, ast.Name) and n.id == target.id and isinstance(n.ctx, ast.Load)
                    for n in ast.walk(fn)
                ):
                    continue
                found.append(node.lineno)
    return found


def test_every_pytest_raises_names_its_message() -> None:
    offenders = {
        path.name: lines
        for path in sorted(TESTS.glob("*.py"))
        if (lines := imprecise_raises(path.read_text()))
    }
    assert offenders == {}, f"pytest.raises without match= (or a checked 'as' target): {offenders}"


def test_the_rule_flags_a_bare_raises() -> None:
    """Negative control: the checker finds what it is meant to find, and only that."""
    source = """
import pytest

def test_bare():
    with pytest.raises(ValueError):
        int("x")

def test_matched():
    with pytest.raises(ValueError, match="invalid literal"):
        int("x")

def test_checked():
    with pytest.raises(ValueError) as info:
        int("x")
    assert "invalid" in str(info.value)

def test_bound_but_unread():
    with pytest.raises(ValueError) as info:
        int("x")
"""
    assert imprecise_raises(source) == [5, 18]
