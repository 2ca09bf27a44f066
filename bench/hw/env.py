"""What machine and software a result was measured on."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata

import psutil

from bench.hw.nvml import system_gpus
from bench.results.schema import Environment, GpuInfo


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def git_state(cwd: str | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git work tree at ``cwd``, or (None, None) outside one."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=5,
        )  # fmt: skip
        return commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def collect(cwd: str | None = None) -> Environment:
    import torch

    driver, nvml_gpus, _reason = system_gpus()
    gpus: list[GpuInfo] = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append(
                GpuInfo(
                    index=i,
                    name=props.name,
                    memory_total_bytes=int(props.total_memory),
                    uuid=str(getattr(props, "uuid", "")) or None,
                )
            )
    elif nvml_gpus:  # driver sees GPUs but torch cannot use them (CPU build, mismatch)
        gpus = [GpuInfo(**g) for g in nvml_gpus]
    commit, dirty = git_state(cwd or os.getcwd())
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return Environment(
        hostname=socket.gethostname(),
        platform=platform.platform(),
        python=platform.python_version(),
        cpu_model=cpu_model(),
        cpu_physical_cores=psutil.cpu_count(logical=False),
        cpu_logical_cores=psutil.cpu_count(logical=True),
        ram_total_bytes=psutil.virtual_memory().total,
        torch_version=torch.__version__,
        torchvision_version=_version("torchvision"),
        timm_version=_version("timm"),
        cuda_version=torch.version.cuda,
        cudnn_version=cudnn,
        gpu_driver_version=driver,
        gpu_count=len(gpus),
        gpus=tuple(gpus),
        torch_num_threads=torch.get_num_threads(),
        git_commit=commit,
        git_dirty=dirty,
    )
