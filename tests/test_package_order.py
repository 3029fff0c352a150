"""The package order: ``hw`` (no torch, no numpy at import) <- ``quant`` <- ``sw`` <- ``sim`` <- ``tools``.

Three checks: the gateware imports in a fresh interpreter in which torch and
numpy cannot be imported at all; no module imports a package above it (read
from the source with ``ast``, every import at any depth); and ``sim`` takes
from ``sw`` only the interface its simulator backends implement
(:mod:`sw.transport`). ``sw.backends`` names the simulator backends by module
path (tests/test_backends.py resolves them).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The packages, lowest first: each may import only those before it.
ORDER = ("hw", "quant", "sw", "sim", "tools")

#: What ``sim`` may import from ``sw``: the transport interface a simulator backend implements.
SIM_FROM_SW = {"sw.transport"}

# Blocks the named top-level packages for the child interpreter: any import of them raises ImportError.
_BLOCKER = """
import importlib.abc, sys
class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "numpy"}:
            raise ImportError(f"{name} is blocked: hw must import without it")
        return None
sys.meta_path.insert(0, _Blocked())
"""

GATEWARE_MODULES = ("hw.engine", "hw.boards.top", "hw.link", "hw.isa", "hw.layout", "hw.docgen")


@pytest.mark.parametrize("module", GATEWARE_MODULES)
def test_gateware_imports_without_torch_and_numpy(module):
    code = _BLOCKER + f"import {module}\n" + (
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'numpy', 'quant', 'sw', 'sim'})\n"
        "assert not leaked, f'importing {module} loaded {leaked}'\n".replace("{module}", module))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"import {module} with torch and numpy blocked failed:\n{proc.stderr[-2000:]}"


def test_blocker_blocks():
    """The child's blocker really refuses numpy (else the test above could not fail)."""
    proc = subprocess.run([sys.executable, "-c", _BLOCKER + "import numpy\n"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "numpy is blocked" in proc.stderr


def _modules(path: Path, package: str) -> set[str]:
    """Modules a module imports, dotted (absolute imports; a relative one as its own package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.add(node.module)
                # ``from sw import transport`` imports the module sw.transport
                found.update(f"{node.module}.{alias.name}" for alias in node.names
                             if (ROOT / node.module.replace(".", "/") / f"{alias.name}.py").exists())
            elif node.level > 0:
                found.add(package)  # a relative import stays inside the module's own package
    return found


def _imports(path: Path, package: str) -> set[str]:
    """Top-level packages a module imports (absolute imports, and relative ones resolved)."""
    return {name.split(".")[0] for name in _modules(path, package)}


def _violations(imports_of) -> list[tuple[str, str]]:
    """``(module, imported package)`` pairs in which a package imports one above it in ORDER."""
    bad = []
    for rank, package in enumerate(ORDER):
        above = set(ORDER[rank + 1:])
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for imported in sorted(imports_of(path, package) & above):
                bad.append((module, imported))
    return bad


def test_no_module_imports_against_the_order():
    bad = _violations(_imports)
    assert not bad, "imports against the package order hw <- quant <- sw <- sim <- tools:\n" + "\n".join(
        f"  {module} imports {imported}" for module, imported in bad)


def test_sim_takes_only_the_transport_interface_from_sw():
    bad = []
    for path in sorted((ROOT / "sim").rglob("*.py")):
        for name in sorted(_modules(path, "sim")):
            if name.split(".")[0] == "sw" and name not in SIM_FROM_SW:
                bad.append(f"  {path.relative_to(ROOT)} imports {name}")
    assert not bad, f"sim may import only {sorted(SIM_FROM_SW)} from sw:\n" + "\n".join(bad)


def test_every_package_of_the_order_exists():
    """A package renamed away would make its checks vacuous."""
    assert all((ROOT / package / "__init__.py").exists() for package in ORDER)


def test_gateware_never_imports_numpy_or_torch_at_module_level():
    """numpy may be used inside a host-side helper function of hw (imported there), never at import."""
    bad = []
    for path in sorted((ROOT / "hw").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.relative_to(ROOT)}: {name}" for name in names
                    if name.split(".")[0] in {"numpy", "torch"}]
    assert not bad, "module-level numpy/torch imports in hw:\n" + "\n".join(bad)


def test_the_order_check_can_fail():
    """A made-up hw module importing sw is reported (the check is not vacuous)."""
    def fake_imports(path, package):
        return {"sw"} if package == "hw" else set()
    assert any(pkg == "sw" for _, pkg in _violations(fake_imports))
