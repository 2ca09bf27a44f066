"""The layers of the house style (../shared/STYLE.md: one concept per module, data flowing one way), enforced: every import between bench modules points down (or sideways).

Every ``import`` in every module under ``bench/`` counts, those inside functions included: an
import hidden in a function still ties the two modules together. The table below is the one in
the house style; a new module must be given a layer here (the test says so).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"

# layer -> its modules (without the "bench." prefix; a name ending in "." is a whole package). The
# folders are the layers: a new module takes the layer of the folder it is put in.
LAYERS: dict[str, tuple[str, ...]] = {
    # `bench/__init__.py` is the library's front door (it imports the results layer at import time,
    # the jobs only when called); `benchmarks.` are the developers' study scripts.
    "command line": ("cli.", "__main__", "", "benchmarks."),
    "orchestration": ("jobs.",),
    "measurement": ("measure.",),
    "presentation": ("present.",),
    "hardware": ("hw.",),
    "pure logic": ("analysis.",),
    "results": ("results.", "_version"),
}  # fmt: skip

# what each layer may import besides itself. Orchestration may use presentation: a profile run
# renders its report and the live sweep table; presentation never imports back up.
MAY_IMPORT: dict[str, set[str]] = {
    "command line": set(LAYERS),
    "orchestration": {"measurement", "presentation", "hardware", "pure logic", "results"},
    "measurement": {"hardware", "pure logic", "results"},
    "presentation": {"pure logic", "results"},
    "hardware": {"results"},
    "pure logic": {"results"},
    "results": set(),
}

# Third-party modules that only some layers may import (inside functions too).
DEVICE_LIBS = {"pynvml": {"hw.nvml"}}
NO_TORCH_LAYERS = {
    "presentation",
    "pure logic",
    "results",
}  # `bench report/compare/history` run without torch
# results: errors.is_oom checks torch.cuda.OutOfMemoryError by type, only when torch is already loaded
TORCH_ALLOWED = {"results.errors"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT / "bench").with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer_of(name: str) -> str | None:
    for layer, members in LAYERS.items():
        for m in members:
            if name == m or (m.endswith(".") and (name + ".").startswith(m)):
                return layer
    return None


def _modules() -> dict[str, Path]:
    return {
        _module_name(p): p for p in sorted((ROOT / "bench").rglob("*.py")) if "__pycache__" not in p.parts
    }


def _imports(path: Path, name: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file; bench's without the prefix, others with
    a leading '!' (their top-level package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []

    def bench_target(module: str) -> str:
        return module.removeprefix("bench").removeprefix(".")

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                found.append((node.lineno, bench_target(alias.name) if top == "bench" else "!" + top))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package upward
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.split(".")[0] == "bench":
                module = bench_target(node.module)
            else:
                found.append((node.lineno, "!" + (node.module or "").split(".")[0]))
                continue
            for alias in node.names:  # `from bench import env` imports the module bench.hw.env
                sub = f"{module}.{alias.name}".lstrip(".")
                is_module = (ROOT / "bench" / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    ROOT / "bench" / Path(*sub.split("."))
                ).is_dir()
                found.append((node.lineno, sub if is_module else module))
    return found


def test_every_module_has_a_layer():
    missing = [name or "bench/__init__" for name in _modules() if _layer_of(name) is None]
    assert not missing, (
        f"give these modules a layer in tests/test_layers.py (and the README architecture section): {missing}"
    )


def test_imports_point_down_the_layers():
    order = list(LAYERS)
    problems = []
    for name, path in _modules().items():
        layer = _layer_of(name)
        for line, target in _imports(path, name):
            rel = f"bench/{path.relative_to(ROOT / 'bench')}:{line}"
            if target.startswith("!"):
                lib = target[1:]
                if lib in DEVICE_LIBS and name not in DEVICE_LIBS[lib]:
                    problems.append(f"{rel}: imports {lib} (only {sorted(DEVICE_LIBS[lib])} may)")
                if lib in ("torch", "torchvision") and layer in NO_TORCH_LAYERS and name not in TORCH_ALLOWED:
                    problems.append(f"{rel}: the {layer} layer imports {lib}")
                continue
            target_layer = _layer_of(target)
            if target_layer is None:
                problems.append(f"{rel}: imports bench.{target}, which has no layer")
            elif target_layer != layer and target_layer not in MAY_IMPORT[layer]:
                problems.append(
                    f"{rel}: {layer} module bench.{name or '__init__'} imports {target_layer} module "
                    f"bench.{target or '__init__'}"
                    + (" (upward)" if order.index(target_layer) < order.index(layer) else "")
                )
    assert not problems, "layer violations:\n" + "\n".join(problems)


# torch.cuda outside bench/hw: what is left, and why it is not a device query behind hw/.
CUDA_OUTSIDE_HW = {
    "hw.env": {
        "is_available",
        "device_count",
        "get_device_properties",
    },  # the environment record (hardware layer)
    "results.errors": {"OutOfMemoryError"},  # an exception type, matched by type
    "measure.annotate": {"nvtx", "profiler"},  # NVTX ranges and the cudaProfilerApi range: tracing
    "measure.profiler": {"memory"},  # the allocator snapshot of a traced point
}
PSUTIL_MODULES = {
    "hw.device",
    "hw.env",
    "measure.telemetry",
    "jobs.isolate",
    "jobs.child",
}  # host RAM; the environment; process sampling; the isolated child's process tree (its workers)


def test_device_queries_stay_in_hw():
    problems = []
    for name, path in _modules().items():
        if name.startswith(("hw.", "benchmarks.")):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        used = {
            n.attr
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute) and n.value.attr == "cuda"
        }
        for n in ast.walk(tree):  # `import torch.cuda.profiler`, `from torch.cuda import nvtx` count too
            if isinstance(n, ast.Import):
                used |= {a.name.split(".")[2] for a in n.names if a.name.startswith("torch.cuda.")}
            elif isinstance(n, ast.ImportFrom) and (n.module or "").startswith("torch.cuda"):
                rest = (n.module or "").split(".")[2:]
                used |= {rest[0]} if rest else {a.name for a in n.names}
        extra = used - CUDA_OUTSIDE_HW.get(name, set())
        if extra:
            problems.append(f"bench.{name} uses torch.cuda.{sorted(extra)}: put the query in bench/hw")
        if "!psutil" in {t for _, t in _imports(path, name)} and name not in PSUTIL_MODULES:
            problems.append(f"bench.{name} imports psutil: put the query in bench/hw")
    assert not problems, "\n".join(problems)


def test_no_import_cycles():
    """Not even through imports inside functions (those hid the cycles the layers now forbid)."""
    graph = {name: set() for name in _modules()}
    for name, path in _modules().items():
        graph[name] |= {t for _, t in _imports(path, name) if t in graph and t != name}
    done: set[str] = set()

    def walk(node: str, trail: list[str]) -> None:
        if node in trail:
            raise AssertionError(
                "import cycle: " + " -> ".join(f"bench.{m}" for m in trail[trail.index(node) :] + [node])
            )
        if node in done:
            return
        for nxt in sorted(graph[node]):
            walk(nxt, [*trail, node])
        done.add(node)

    for name in sorted(graph):
        walk(name, [])


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """The test would be worthless if a function-level import slipped past it."""
    found = {t for _, t in _imports(ROOT / "bench" / "present" / "report.py", "present.report")}
    assert "results.store" in found  # imported inside load_runs
    found = {t for _, t in _imports(ROOT / "bench" / "present" / "plots.py", "present.plots")}
    assert "!matplotlib" in found  # imported inside the plotting functions


BLOCK_TORCH = """
import sys

class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "timm", "pynvml"):
            raise ImportError(f"{name} is blocked: this command must run without it")
        return None

sys.meta_path.insert(0, _NoTorch())
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["report", "{data}/gpu_resnet50_fp32.json", "{data}/gpu_resnet50_bf16.json", "-o", "{tmp}/report"],
        ["report", "{data}/cpu_resnet18.json", "-o", "{tmp}/report_cpu"],
        ["compare", "{data}/gpu_resnet50_fp32.json", "{data}/gpu_resnet50_fp32_slow10.json", "--strict", "--db", "{tmp}/h.db"],
        ["import", "{data}/cpu_resnet18.json", "{data}/h100_sweep_efficientnet_b0_bf16_cl_b16-64.json",
         "--db", "{tmp}/h.db"],
        ["diagnose", "{data}/h100_sweep_efficientnet_b0_bf16_cl_b16-64.json"],
        ["diagnose", "{data}/cpu_resnet18.json"],
    ],
    ids=["report-gpu", "report-cpu", "compare", "import", "diagnose-gpu", "diagnose-cpu"],
)  # fmt: skip
def test_light_commands_run_where_torch_cannot_be_imported(tmp_path, args):
    """`bench report/compare/import/history/diagnose` run in lightweight CI jobs without torch."""
    (tmp_path / "sitecustomize.py").write_text(BLOCK_TORCH, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    argv = [a.format(data=DATA, tmp=tmp_path) for a in args]

    def bench(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "bench", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )

    check = subprocess.run(
        [sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert "blocked" in check.stderr  # the blocker is in force
    proc = bench(*argv)
    assert proc.returncode == (1 if args[0] == "compare" else 0), proc.stdout[-1500:] + proc.stderr[-1500:]
    if args[0] == "import":
        history = bench("history", "--db", str(tmp_path / "h.db"))
        assert history.returncode == 0 and "resnet18" in history.stdout, history.stderr[-1500:]
