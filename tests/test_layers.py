"""The layers of the house style (../shared/STYLE.md: one concept per module, data flowing one way), enforced: every import between bench modules points down (or sideways).

Every ``import`` in every module under ``bench/`` counts, those inside functions included: an
import hidden in a function still ties the two modules together. The table below is the one in
the house style; a new module must be given a layer here (the test says so).
"""

from __future__ import annotations

import ast
import os
import re
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

# Third-party modules that only some modules may import (inside functions too).
DEVICE_LIBS = {"pynvml": {"hw.nvml"}}

# torch (and torchvision) only here, as the README's Architecture section lists them: a name ending
# in "." is a whole package. Everywhere else (presentation, pure logic, results, the command line)
# runs without torch: `bench report/compare/history/diagnose` in a light CI job.
TORCH_MODULES = (
    "measure.", "hw.", "benchmarks.",  # measuring, the device, the study scripts
    "jobs.distributed", "jobs.noise", "jobs.ab",  # torch.distributed, generators and DDP, a side's threads
    "jobs.maxbatch",  # the probes (being split into measure/ under issue 18)
    "results.errors",  # is_oom matches torch.cuda.OutOfMemoryError by type, only when torch is loaded
)  # fmt: skip

# The one list of imports that stay inside functions, deliberately lazy: importing bench (or any
# of its light commands) must not pay for, or need, these. Every other import sits at the top.
LAZY_LIBS = {
    "torch", "torchvision", "timm",  # the measuring stack: seconds to import, absent in light CI
    "pynvml", "nvtx",  # optional device libraries, imported where a GPU is there
    "matplotlib", "jinja2", "numpy",  # the report's plots and templates, compare's bootstrap
    "lightning", "accelerate",  # peer tools in benchmarks/peer_finders.py, not dependencies
}  # fmt: skip
# bench modules imported lazily, and why: `import bench` (run first by every `import bench.x`)
# loads the results layer only; its job functions import the jobs when called.
LAZY_BENCH = {"": ("jobs.",)}
# other branches of issue 18 rewrite these modules; their local imports are hoisted when they land
NOT_YET_HOISTED: set[str] = set()

# `"bench.jobs.sweep_loop:_point_in_child"`: a function a child process imports by name
STRING_IMPORT = re.compile(r"^bench((?:\.\w+)+)(?::(\w+))?$")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT / "bench").with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _listed(name: str, members: tuple[str, ...]) -> bool:
    return any(name == m or (m.endswith(".") and (name + ".").startswith(m)) for m in members)


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
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = STRING_IMPORT.match(node.value)
            if match and _is_bench_module(match.group(1)[1:]):
                found.append((node.lineno, match.group(1)[1:]))
    return found


def _is_bench_module(name: str) -> bool:
    path = ROOT / "bench" / Path(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


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
                if lib in ("torch", "torchvision") and not _listed(name, TORCH_MODULES):
                    problems.append(
                        f"{rel}: imports {lib}, which only {TORCH_MODULES} may (README, Architecture)"
                    )
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


# torch.cuda outside bench/hw, and why it is not a device query behind hw/ (the README says so too).
CUDA_OUTSIDE_HW = {
    "results.errors": {"OutOfMemoryError"},  # an exception type, matched by type
    # the hand-written reference loop a bench number is checked against: what a user writes, on purpose
    "benchmarks.fidelity": {"synchronize", "is_available", "get_device_name"},
}


def test_device_queries_stay_in_hw():
    """torch.cuda and psutil only in bench/hw; every other layer (benchmarks and bench/__init__ too)."""
    problems = []
    for name, path in _modules().items():
        if name.startswith("hw."):
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
        if "!psutil" in {t for _, t in _imports(path, name)}:
            problems.append(f"bench.{name} imports psutil: put the query in bench/hw (hw/host.py)")
    assert not problems, "\n".join(problems)


def _function_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import inside a function (relative ones resolved to bench.)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for n in ast.walk(fn):
                if isinstance(n, ast.Import):
                    out += [(n.lineno, a.name) for a in n.names]
                elif isinstance(n, ast.ImportFrom):
                    out.append((n.lineno, "bench." + (n.module or "") if n.level else n.module or ""))
    return sorted(set(out))


def test_imports_inside_functions_are_only_the_deliberately_lazy_ones():
    """A local import hides a dependency; only LAZY_LIBS (and LAZY_BENCH) may be imported late."""
    problems = []
    for name, path in _modules().items():
        if name in NOT_YET_HOISTED:
            continue
        for line, module in _function_imports(path):
            top = module.split(".")[0]
            if top in LAZY_LIBS:
                continue
            target = module.removeprefix("bench").removeprefix(".")
            if top == "bench" and _listed(target, LAZY_BENCH.get(name, ())):
                continue
            problems.append(
                f"bench/{path.relative_to(ROOT / 'bench')}:{line}: import {module} (move it to the top)"
            )
    assert not problems, "imports inside functions that are not deliberately lazy:\n" + "\n".join(problems)


def test_string_imports_name_a_function_that_exists():
    """`"bench.x:func"` (a child process's target, a built-in model, a profile's model) resolves."""
    texts = [(p, p.read_text(encoding="utf-8")) for p in sorted((ROOT / "bench").rglob("*.py"))]
    texts += [(p, p.read_text(encoding="utf-8")) for p in sorted((ROOT / "profiles").glob("*.toml"))]
    found = 0
    problems = []
    for path, text in texts:
        for module, func in re.findall(r"[\"']bench((?:\.\w+)+):(\w+)[\"']", text):
            found += 1
            target = ROOT / "bench" / Path(*module[1:].split("."))
            source = target.with_suffix(".py")
            if not source.exists():
                problems.append(f"{path.relative_to(ROOT)}: bench{module}:{func}: no such module")
            elif not re.search(rf"^def {func}\(", source.read_text(encoding="utf-8"), re.M):
                problems.append(f"{path.relative_to(ROOT)}: bench{module}:{func}: no such function")
    assert found >= 4  # the children of sweeps, max-batch and A/B runs, the built-in LM
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


def test_the_checker_sees_imports_inside_functions_and_by_string(tmp_path):
    """The test would be worthless if a function-level or string import slipped past it."""
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from bench.results import store\n    import matplotlib\n"
        "TARGET = 'bench.jobs.sweep_loop:_point_in_child'\n",
        encoding="utf-8",
    )
    found = {t for _, t in _imports(module, "present.m")}
    assert {"results.store", "!matplotlib", "jobs.sweep_loop"} <= found
    assert [m for _, m in _function_imports(module)] == ["bench.results", "matplotlib"]


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


def test_the_readme_architecture_table_names_every_module_in_its_folder():
    """The README's table and the folders match one to one: each module is named in its layer's row."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Architecture") : text.index("## Development")]
    rows = {}
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) > 3:
            for folder in re.findall(r"`bench/(\w+)/`|`(benchmarks)/`", cells[2]):
                rows[folder[0] or folder[1]] = cells[3]
    problems = []
    for folder in ("cli", "jobs", "measure", "analysis", "results", "present", "hw", "benchmarks"):
        for path in sorted((ROOT / "bench" / folder).glob("*.py")):
            if (
                path.stem != "__init__"
                and f"{path.stem}.py" not in rows.get(folder, "")
                and (f"`{path.stem}." not in rows.get(folder, ""))
            ):
                problems.append(f"bench/{folder}/{path.name}")
    assert not problems, f"name these in the README's Architecture table: {problems}"
