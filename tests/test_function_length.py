"""No function longer than its package's limit (hw/ 120 lines, the host packages 100) unless it says why.

A function may be longer when a comment on its ``def`` line, or on the line just above it (above its
decorators), starts with ``# long:`` and gives the reason. Lines are counted from ``def`` to the last
line of the body, docstring included.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Lines a function may have, per package.
LIMITS = {"hw": 120, "sw": 100, "quant": 100, "sim": 100, "tools": 100}
REASON = "# long:"


def _explained(lines: list[str], node) -> bool:
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return REASON in lines[node.lineno - 1] or (first >= 2 and lines[first - 2].strip().startswith(REASON))


def _long_functions(package: str, limit: int) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit and not _explained(lines, node):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    return found


@pytest.mark.parametrize("package", list(LIMITS))
def test_no_function_over_the_limit_without_a_reason(package):
    long = _long_functions(package, LIMITS[package])
    assert not long, (f"functions in {package}/ over {LIMITS[package]} lines (split them, or say why in a "
                      f"'{REASON}' comment on or above the def):\n" + "\n".join(long))


@pytest.mark.parametrize("package", list(LIMITS))
def test_the_length_check_reads_the_package(package):
    assert _long_functions(package, 20), f"no function in {package}/ is over 20 lines: the check reads nothing"


def test_a_reason_exempts_and_nothing_else_does(tmp_path):
    src = ("def short():\n    pass\n\n\n"
           "# long: a table that reads best whole\n@staticmethod\ndef explained():\n" + "    x = 1\n" * 30 + "\n\n"
           "def unexplained():  # too long\n" + "    x = 1\n" * 30)
    lines = src.splitlines()
    nodes = {n.name: n for n in ast.parse(src).body}
    assert _explained(lines, nodes["explained"])
    assert not _explained(lines, nodes["unexplained"])
    assert not _explained(lines, nodes["short"])
