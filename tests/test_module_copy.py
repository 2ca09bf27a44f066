"""bench.measure.module_copy: the one way a user's module is copied (to the CPU, never via the device)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.measure.module_copy import ModuleBytes, cpu_copy, module_spec
from bench.results.errors import BenchError

ROOT = Path(__file__).resolve().parent.parent


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight  # tied, as in a language model
        self.norm = nn.BatchNorm1d(3)
        self.frozen = nn.Linear(3, 3)
        self.frozen.weight.requires_grad_(False)


def test_the_copy_is_independent_equal_and_keeps_ties_and_frozen_weights():
    model = Tied()
    copy = cpu_copy(model)
    assert copy is not model and type(copy) is Tied
    for (name, a), (_, b) in zip(model.state_dict().items(), copy.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
        assert a.data_ptr() != b.data_ptr(), name  # its own memory
    assert copy.head.weight is copy.embed.weight  # still tied
    assert not copy.frozen.weight.requires_grad and copy.frozen.bias.requires_grad
    with torch.no_grad():
        copy.embed.weight.add_(1.0)
    assert not torch.equal(model.embed.weight, copy.embed.weight)  # the user's model untouched


def test_no_tensor_is_deep_copied_where_it_lives(monkeypatch):
    """Parameters and buffers go straight to host memory: Tensor.__deepcopy__ (which copies on the
    tensor's own device: a second copy of a GPU model on the GPU) is never called."""

    def on_the_device(self, memo):
        raise AssertionError("a tensor was deep-copied on its device")

    model = Tied()
    monkeypatch.setattr(torch.Tensor, "__deepcopy__", on_the_device)
    copy = cpu_copy(model)
    assert all(p.device.type == "cpu" for p in copy.parameters())


def test_a_class_defined_in_a_function_copies_in_process_and_is_refused_for_a_child():
    class Local(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

    spec = module_spec(Local(), (2,), label="module:Local")
    a, b = spec.build(), spec.build()
    assert a is not b and a.fc.weight.data_ptr() != b.fc.weight.data_ptr()
    assert spec.name.startswith("module:Local#") and spec.input_shape == (2,)
    with pytest.raises(BenchError, match="define its class at module level"):
        ModuleBytes.of(Local())


def test_module_bytes_pickle_into_a_child_and_build_copies():
    model = Tied()
    builder = pickle.loads(pickle.dumps(ModuleBytes.of(model)))
    built = builder()
    assert torch.equal(built.embed.weight, model.embed.weight)
    assert built.head.weight is built.embed.weight


def test_the_plugin_copies_through_the_helper():
    text = (ROOT / "bench" / "jobs" / "plugin.py").read_text(encoding="utf-8")
    assert "module_spec(" in text and "deepcopy" not in text
