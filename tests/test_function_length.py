"""No function in the gateware (hw/) longer than 120 lines: elaborate()s are split into components.

(The host packages' limit of 100 lines is issue 9's host-side part; add them here when they meet it.)
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 120


def _long_functions(package: str, limit: int) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines} lines")
    return found


def test_no_gateware_function_over_the_limit():
    long = _long_functions("hw", LIMIT)
    assert not long, f"functions in hw/ over {LIMIT} lines:\n" + "\n".join(long)


def test_the_length_check_can_fail():
    assert _long_functions("hw", 20), "no hw function is over 20 lines: the check reads nothing"
