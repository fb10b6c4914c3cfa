"""No block of six or more lines is written twice in the tests, except the few below,
each with the reason it stays. A copy is found by its text: six consecutive lines that
are neither blank, comments, imports, docstrings, a function's signature nor a lone
closing bracket, equal (stripped of indentation) to six elsewhere in tests/."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from stackkit.stack import ROOT

BLOCK = 6
# The first line of an allowed copy -> why it is written out more than once.
ALLOWED: dict[str, str] = {}
CLOSERS = {")", "]", "}", "),", "],", "},", ") -> None:", '"""'}


def significant_lines(path: Path) -> list[tuple[int, str]]:
    source = path.read_text()
    skip: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            skip.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            # The signature (decorators to the line before the body), and a docstring.
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            skip.update(range(start, node.body[0].lineno))
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    lines = []
    for number, line in enumerate(source.splitlines(), 1):
        text = line.strip()
        if number in skip or not text or text.startswith("#") or text in CLOSERS:
            continue
        lines.append((number, text))
    return lines


def copies() -> dict[tuple[str, ...], list[str]]:
    seen: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for path in sorted((ROOT / "tests").rglob("*.py")):
        lines = significant_lines(path)
        for i in range(len(lines) - BLOCK + 1):
            block = tuple(text for _, text in lines[i : i + BLOCK])
            seen[block].append(f"{path.relative_to(ROOT)}:{lines[i][0]}")
    return {block: where for block, where in seen.items() if len(where) > 1}


def test_blocks_of_six_lines_stand_once_unless_explained() -> None:
    found = {
        block[0]: where
        for block, where in copies().items()
        if not any(line in ALLOWED for line in block)
    }
    assert not found, "copied blocks (fold them into a helper, or explain in ALLOWED):\n" + (
        "\n".join(f"  {first!r} at {', '.join(where)}" for first, where in found.items())
    )


def test_the_allowed_copies_still_exist() -> None:
    present = {line for block in copies() for line in block}
    assert set(ALLOWED) <= present, "an allowed copy is gone: drop it from ALLOWED"
