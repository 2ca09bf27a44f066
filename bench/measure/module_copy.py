"""The one way bench copies a user's ``nn.Module``: to the CPU, tensor by tensor, never through the
device. A measurement must not touch the caller's model, and a copy must not land on the GPU it is
about to measure (``copy.deepcopy(model).cpu()`` first makes a whole second copy there).

``cpu_copy`` copies the module's structure with ``copy.deepcopy``, but every parameter and buffer
is copied straight to host memory (one device-to-host copy each; ties between parameters kept).
``ModuleBytes`` is that copy serialised once, for builders that must be pickled into a child
process; ``module_spec`` is the ``ModelSpec`` a measurement builds from (each build an independent
copy on the CPU, moved to the device by the step as any model is).
"""

from __future__ import annotations

import copy
import io
import uuid
from dataclasses import dataclass
from typing import Any

from bench.measure.models import ModelSpec
from bench.results.errors import BenchError, first_line


def cpu_copy(module: Any) -> Any:
    """An independent copy of ``module`` whose parameters and buffers live on the CPU; ``module``
    is not changed and nothing is allocated on its device."""
    import torch

    memo: dict[int, Any] = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) in memo:
            continue
        host = tensor.detach().to("cpu", copy=True)
        if isinstance(tensor, torch.nn.Parameter):
            host = torch.nn.Parameter(host, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = host
    return copy.deepcopy(module, memo)


@dataclass(frozen=True)
class ModuleBytes:
    """A user's module serialised once (``torch.save`` of its CPU copy); each call builds an
    independent copy on the CPU. Picklable, so a child process can build copies too."""

    data: bytes

    def __call__(self) -> Any:
        import torch

        return torch.load(io.BytesIO(self.data), map_location="cpu", weights_only=False)

    @classmethod
    def of(cls, module: Any) -> ModuleBytes:
        """BenchError (one line) when the module cannot be pickled (a class defined inside a
        function, a lambda attribute): a child process could not rebuild it."""
        import torch

        label = f"{type(module).__module__}.{type(module).__qualname__}"
        buf = io.BytesIO()
        try:
            torch.save(cpu_copy(module), buf)
        except Exception as exc:  # pickling: a class defined inside a function, a lambda attribute, ...
            raise BenchError(
                f"cannot copy the model {label} ({first_line(exc)}): define its class at module level, "
                "or pass a factory name 'package.module:function'"
            ) from None
        return cls(buf.getvalue())


def module_spec(
    module: Any, input_shape: tuple[int, ...] | None = None, *, label: str | None = None
) -> ModelSpec:
    """The ``ModelSpec`` of a user's module for an in-process measurement: each build is a fresh
    CPU copy of one frozen CPU copy taken now (later changes to ``module`` do not leak in). The
    name is ``label`` (default the class) plus a unique suffix: ``prepare()`` caches facts by name."""
    frozen = cpu_copy(module)
    name = label or type(module).__name__
    return ModelSpec(
        name=f"{name}#{uuid.uuid4().hex[:8]}",
        source="module",
        build=lambda: copy.deepcopy(frozen),
        input_shape=tuple(int(s) for s in input_shape) if input_shape else None,
    )
