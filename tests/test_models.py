import pytest
import torch

from bench.hw.device import CpuDevice
from bench.measure.models import resolve
from bench.measure.step import prepare
from bench.results.errors import BenchError
from bench.results.schema import Workload


def test_torchvision_name():
    spec = resolve("resnet18")
    assert spec.source == "torchvision"
    assert isinstance(spec.build(), torch.nn.Module)


def test_unknown_model_names_close_matches():
    with pytest.raises(BenchError, match="efficientnet_b0"):
        resolve("efficientnet_bo")
    with pytest.raises(BenchError, match="unknown model"):
        resolve("zzzz_not_a_model")


def test_timm_prefix():
    pytest.importorskip("timm")
    assert resolve("timm:resnet18").source == "timm"
    with pytest.raises(
        BenchError,
        match=r"unknown model .resnet_does_not_exist. in timm(; did you mean .*)? \(see `bench models --timm`\)",
    ):
        resolve("timm:resnet_does_not_exist")
    with pytest.raises(BenchError, match=r"unknown model .resnet181. in timm; did you mean resnet18"):
        resolve("timm:resnet181")


def test_factory_errors_are_one_line():
    with pytest.raises(BenchError, match="cannot import"):
        resolve("no_such_pkg.mod:fn")
    with pytest.raises(BenchError, match="has no callable"):
        resolve("tests.tiny_models:nope")
    spec = resolve("tests.tiny_models:not_a_module")
    with pytest.raises(BenchError, match="not a torch.nn.Module"):
        spec.build()


def test_factory_default_is_image_classifier():
    spec = resolve("tests.tiny_models:tiny_cnn")
    wl = Workload(model=spec.name, image_size=16)
    prep = prepare(wl, spec, 3, CpuDevice())
    assert tuple(prep.refs["x"].shape) == (3, 3, 16, 16)
    assert int(prep.refs["y"].max()) < 10  # labels from the output's last dimension
    assert prep.refs["x"].abs().sum() > 0  # never time on zeros
    prep.step()


def test_factory_with_own_batch_and_loss():
    spec = resolve("tests.custom_input:tiny_seq")
    assert not spec.is_image_classifier
    prep = prepare(Workload(model=spec.name), spec, 4, CpuDevice())
    assert tuple(prep.refs["x"].shape) == (4, 12)
    prep.step()


def test_factory_with_input_shape():
    spec = resolve("tests.flat_input:flat")
    assert spec.input_shape == (20,)
    prep = prepare(Workload(model=spec.name), spec, 4, CpuDevice())
    assert tuple(prep.refs["x"].shape) == (4, 20)
    prep.step()


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
@pytest.mark.parametrize("mode", ["train", "infer"])
def test_step_runs_in_every_mode(mode, precision):
    spec = resolve("tests.tiny_models:tiny_cnn")
    wl = Workload(model=spec.name, image_size=8, mode=mode, precision=precision, channels_last=True)
    prep = prepare(wl, spec, 2, CpuDevice())
    prep.step()
    prep.step()
    if mode == "train":  # zero_grad(set_to_none=True) after the optimizer step
        assert all(p.grad is None for p in prep.refs["model"].parameters())
        assert prep.refs["opt"].state  # optimizer state was allocated


def test_wrong_image_size_is_a_clear_error():
    spec = resolve("tests.tiny_models:broken_model")
    with pytest.raises(BenchError, match="failed on a 3x8x8 input"):
        prepare(Workload(model=spec.name, image_size=8), spec, 2, CpuDevice())


def test_bench_s_own_models_resolve_by_their_short_name_and_are_listed(capsys):
    """The zoo is reachable like torchvision: `transformer_lm` resolves to the factory results record,
    `bench models` lists it, and a typo of it is suggested."""
    from bench.cli import main
    from bench.measure.models import resolve
    from bench.results.errors import BenchError

    assert resolve("transformer_lm").name == "bench.measure.zoo:transformer_lm"
    assert main(["models", "transformer"]) == 0
    assert capsys.readouterr().out.split() == ["transformer_lm"]
    with pytest.raises(BenchError, match="transformer_lm"):
        resolve("transformer_ln")
