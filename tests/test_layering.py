"""The import arrows point one way: contract <- stages <- tools.

- ``birlik`` (the contract, shared clients, configuration, process helpers) imports nothing above it;
- a stage (``gateway``, ``ingest``, ``analytics``, ``simulators``, ``grafana``) imports the contract
  and itself, never another stage; the one exception is the gateway loading the simulator driver
  lazily (inside a function), only when simulated machines are configured;
- ``ops`` (the ``birlik`` command, demo, benchmarks, local servers) may import everything, and
  nothing imports it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = "birlik"
STAGES = ("gateway", "ingest", "analytics", "simulators", "grafana")
TOOLS = "ops"
PACKAGES = (CONTRACT, *STAGES, TOOLS)
#: (importer, imported) pairs allowed only inside a function, never at module level.
LAZY_ONLY = {("gateway", "simulators")}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. "gateway.cli"
    target: str  # the imported module, absolute, e.g. "simulators.driver"
    line: int
    lazy: bool  # inside a function body (run only when called)


def imports_of(module: str, source: str) -> list[Import]:
    """Every import in ``source`` with its absolute target and whether it is function-local."""
    found: list[Import] = []
    package = module.rsplit(".", 1)[0] if "." in module else module

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                found.extend(Import(module, a.name, child.lineno, lazy) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    target = ".".join([*base, child.module] if child.module else base)
                else:
                    target = child.module or ""
                found.append(Import(module, target, child.lineno, lazy))
            visit(child, inner)

    visit(ast.parse(source), False)
    return found


def layer_violation(imp: Import) -> str | None:
    """Why this import points the wrong way, or None."""
    src = imp.module.split(".")[0]
    dst = imp.target.split(".")[0]
    if dst not in PACKAGES or dst == src:
        return None
    where = f"{imp.module}:{imp.line} imports {imp.target}"
    if src == CONTRACT:
        return f"{where}: the contract package imports nothing above it"
    if dst == TOOLS:
        return f"{where}: nothing below the tools imports {TOOLS}"
    if src in STAGES and dst in STAGES:
        if (src, dst) in LAZY_ONLY and imp.lazy:
            return None
        return f"{where}: a stage does not import another stage"
    return None


def project_imports() -> list[Import]:
    result: list[Import] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            result.extend(imports_of(".".join(parts), path.read_text()))
    return result


def test_every_import_points_down() -> None:
    imports = project_imports()
    # The scan sees the arrows that must exist, so an empty or broken scan cannot pass.
    assert any(i.module.startswith("ingest.") and i.target.startswith("birlik.") for i in imports)
    assert any(i.module == "ops.cli" and i.target.startswith("gateway") for i in imports)
    violations = [v for i in imports if (v := layer_violation(i))]
    assert violations == [], "\n".join(violations)


def test_gateway_loads_simulators_only_lazily() -> None:
    lazy = [i for i in project_imports() if i.module.startswith("gateway") and i.target.startswith("simulators")]
    assert lazy, "the gateway's simulator driver is expected to be loaded from gateway.cli"
    assert all(i.lazy for i in lazy)


@pytest.mark.parametrize(
    ("module", "source", "wrong"),
    [
        ("birlik.payload", "from ingest.service import IngestService\n", True),
        ("birlik.payload", "def f():\n    import gateway.cli\n", True),
        ("birlik.config", "from ops import cli\n", True),
        ("ingest.service", "from analytics.worker import AnalyticsWorker\n", True),
        ("analytics.cli", "def run():\n    from gateway.cli import parse_start\n", True),
        ("gateway.drivers", "from simulators.fleet import Fleet\n", True),
        ("gateway.cli", "def f():\n    from simulators.driver import SimulatorDriver\n", False),
        ("gateway.service", "from ..ingest import service\n", True),
        ("ingest.cli", "from ops.servers import Supervisor\n", True),
        ("ingest.service", "from birlik.payload import decode_telemetry\nfrom .deadletters import X\n", False),
        ("ops.demo", "from ingest.deadletters import load\nfrom simulators.fleet import Fleet\n", False),
    ],
)
def test_checker_flags_wrong_arrows(module: str, source: str, wrong: bool) -> None:
    violations = [v for i in imports_of(module, source) if (v := layer_violation(i))]
    assert bool(violations) is wrong, violations
