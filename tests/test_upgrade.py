"""Every result file bench has ever written loads through the chain of upgraders (bench.results.upgrade),
one test per schema version, each with a real file of that version."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from bench.results import upgrade as up
from bench.results.ab import ABResult
from bench.results.codec import dumps, load_result, result_from_dict, to_dict
from bench.results.errors import BenchError
from bench.results.maxbatch import MaxBatchResult
from bench.results.noise import NoiseResult, load_noise
from bench.results.schema import SCHEMA_VERSION, Timing

DATA = Path(__file__).parent / "data"
SHARED_H100 = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "h100-80gb-hbm3"
# version-1 sweeps: a real CPU sweep and the H100 run (the same file as the shared fixture)
SWEEP_V1 = [DATA / "cpu_resnet18.json", DATA / "h100_sweep_efficientnet_b0_bf16_cl_b16-64.json"]


def _raw(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _keys(d: object, where: str = "") -> set[str]:
    """Every key path in a JSON object (lists: their first element)."""
    out: set[str] = set()
    if isinstance(d, dict):
        for k, v in d.items():
            out |= {f"{where}.{k}"} | _keys(v, f"{where}.{k}")
    elif isinstance(d, list) and d:
        out |= _keys(d[0], f"{where}[]")
    return out


def test_each_kind_has_an_upgrader_from_every_older_version():
    for kind, current in up.CURRENT.items():
        assert sorted(up.UPGRADERS[kind]) == list(range(1, current)), kind
    assert up.CURRENT["sweep"] == SCHEMA_VERSION
    for kind, cls in (("max_batch", MaxBatchResult), ("ab", ABResult), ("noise", NoiseResult)):
        default = {f.name: f.default for f in dataclasses.fields(cls)}["schema_version"]
        assert default == up.CURRENT[kind], kind


@pytest.mark.parametrize("path", SWEEP_V1, ids=lambda p: p.name)
def test_a_version_1_sweep_upgrades_to_what_version_2_writes(path):
    raw = _raw(path)
    assert raw["schema_version"] == 1
    before = copy.deepcopy(raw)
    upgraded = up.upgrade(raw, "sweep")
    assert raw == before  # the input is not changed
    assert upgraded["schema_version"] == 2
    # every field the current writer writes is there, none invented beyond it
    written = json.loads(dumps(result_from_dict(raw)))
    assert _keys(upgraded) == _keys(written)
    w = upgraded["workload"]
    assert (w["cudnn_benchmark"], w["data"], w["workers"], w["compile_mode"]) == (True, "synthetic", 0, None)
    assert upgraded["settings"]["repeat"] == 1
    assert upgraded["recommendation"] is None and upgraded["advice"] == []
    # what was measured is untouched
    assert [p["step_seconds"] for p in upgraded["points"]] == [p["step_seconds"] for p in raw["points"]]


@pytest.mark.parametrize("path", SWEEP_V1, ids=lambda p: p.name)
def test_the_loader_calls_the_upgrader_for_a_version_1_file(path, monkeypatch):
    calls = []
    real = up.UPGRADERS["sweep"][1]
    monkeypatch.setitem(up.UPGRADERS["sweep"], 1, lambda d: (calls.append(d["run_id"]), real(d))[1])
    result = load_result(str(path))
    assert calls == [_raw(path)["run_id"]]
    assert result.schema_version == 2
    assert all(p.timing == Timing() for p in result.points)


def test_the_h100_fixture_in_shared_loads_as_the_copy_in_tests_data():
    shared = SHARED_H100 / "sweep_efficientnet_b0_bf16_cl_b16-64.json"
    if not shared.exists():
        pytest.skip("no ../shared/fixtures in this checkout")
    assert load_result(str(shared)) == load_result(str(SWEEP_V1[1]))


def test_a_version_2_sweep_needs_no_upgrader_and_round_trips(tmp_path, monkeypatch):
    result = load_result(str(SWEEP_V1[0]))
    path = tmp_path / "v2.json"
    path.write_text(dumps(result), encoding="utf-8")
    assert _raw(path)["schema_version"] == 2
    monkeypatch.setitem(up.UPGRADERS["sweep"], 1, lambda d: pytest.fail("a version-2 file was upgraded"))
    assert load_result(str(path)) == result
    assert to_dict(load_result(str(path))) == _raw(path)


def test_a_version_1_noise_result_loads():
    raw = _raw(DATA / "noise_tiny.json")
    assert (raw["kind"], raw["schema_version"]) == ("noise", 1)
    assert up.upgrade(raw, "noise") is raw  # the current version: nothing to do
    assert load_noise(str(DATA / "noise_tiny.json")).schema_version == 1


@pytest.mark.parametrize(
    ("version", "message"),
    [(3, "newer than this bench"), ("2", "newer than this bench"), (True, "newer than this bench"),
     (0, "not one bench ever wrote"), (-1, "not one bench ever wrote")],
)  # fmt: skip
def test_a_version_bench_never_wrote_is_one_line(version, message):
    raw = {**_raw(SWEEP_V1[0]), "schema_version": version}
    with pytest.raises(BenchError, match=message):
        result_from_dict(raw)
