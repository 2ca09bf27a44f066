import pytest
import torch

from bench.jobs.profiles import available_profiles, load_profile, parse_profile
from bench.results.errors import BenchError


def write(tmp_path, text, name="p.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_matrix_expansion(tmp_path):
    path = write(
        tmp_path,
        """
models = ["resnet18", "tests.tiny_models:tiny_cnn"]
modes = ["train", "infer"]
precisions = ["fp32", "bf16"]
channels_last = [false, true]
device = "cpu"
image_size = 32
batch_sizes = "2:16"
max_batch = true
[measure]
max_time = 2.5
warmup = 1
""",
    )
    prof = load_profile(path)
    assert len(prof.entries) == 2 * 2 * 2 * 2
    e = prof.entries[0]
    assert e.batch_sizes == (2, 4, 8, 16)
    assert e.settings.max_time_seconds == 2.5 and e.settings.warmup_steps == 1
    assert e.workload.image_size == 32 and e.workload.device == "cpu"
    assert {x.max_batch for x in prof.entries if x.workload.mode == "infer"} == {False}
    assert {x.max_batch for x in prof.entries if x.workload.mode == "train"} == {True}
    assert prof.report_dir == "reports/p"
    # no granularity given: the search picks the device's (8 on CPU: no finer than RSS noise)
    assert {x.granularity for x in prof.entries} == {None}
    from bench.jobs.maxbatch import default_granularity

    assert default_granularity("cpu") == 8 and default_granularity("cuda") == 1


@pytest.mark.parametrize(
    "text, key, what",
    [
        ("modes = ['train']", "models", "required"),
        ("models = ['resnet18']\nmodle = 1", "modle", "unknown key"),
        ("models = ['resnet18']\nprecisions = ['fp8']", "precisions", "unknown value 'fp8'"),
        ("models = ['resnet18']\nmodes = ['fly']", "modes", "unknown value 'fly'"),
        ("models = []", "models", "must not be empty"),
        ("models = ['resnet18']\nimage_size = 0", "image_size", "positive integer"),
        ("models = ['resnet18']\nimage_size = 'big'", "image_size", "expected an integer"),
        ("models = ['resnet18']\nbatch_sizes = [0, 2]", "batch_sizes", "must be positive"),
        ("models = ['resnet18']\nbatch_sizes = 'max'", "batch_sizes", "needs max_batch"),
        ("models = ['resnet18']\nmodes = ['infer']\nmax_batch = true", "max_batch", "training step"),
        ("models = ['resnet18']\nchannels_last = 'yes'", "channels_last", "expected true/false"),
        ("models = ['resnet18']\ndevice = 'tpu'", "device", "unknown device"),
        ("models = ['resnet18']\n[measure]\nmax_tme = 3", "measure.max_tme", "unknown key"),
        ("models = ['resnet18']\n[measure]\nmax_time = 'long'", "measure.max_time", "expected a number"),
        (
            "models = ['resnet18']\n[measure]\nmax_time = -3",
            "measure.max_time",
            "max time per point must be > 0",
        ),
        ("models = ['resnet18', 'resnt18']", "models", "unknown model 'resnt18'"),
        pytest.param(
            "models = ['resnet18']\ndevice = 'cuda'",
            "device",
            "no CUDA device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here"),
        ),  # fmt: skip
        ("models = ['resnet18']\nmax_batch = true\nmemory_limit = 'lots'", "memory_limit", "lots"),
    ],
)
def test_validation_names_file_key_and_problem(tmp_path, text, key, what):
    path = write(tmp_path, text)
    with pytest.raises(BenchError) as info:
        load_profile(path)
    msg = str(info.value)
    assert path in msg and f"'{key}'" in msg and what in msg, msg


def test_invalid_measure_values_together(tmp_path):
    path = write(tmp_path, "models = ['resnet18']\n[measure]\nmax_time = 2\nmin_time = 3")
    with pytest.raises(
        BenchError, match=r"table \[measure\]: min time per point must be between 0 and the max"
    ):
        load_profile(path)
    short = load_profile(write(tmp_path, "models = ['resnet18']\n[measure]\nmax_time = 0.5", "short.toml"))
    assert short.entries[0].settings.min_time_seconds == 0.5  # the minimum follows a short maximum


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(BenchError, match="not valid TOML"):
        load_profile(write(tmp_path, "models = [", "bad.toml"))
    with pytest.raises(BenchError, match="no such file"):
        load_profile(str(tmp_path / "absent.toml"))
    with pytest.raises(BenchError, match="no profile named 'nope'.*quickstart"):
        load_profile("nope")


def test_shipped_profiles_parse_and_document_themselves():
    names = {name for name, _ in available_profiles()}
    assert {"quickstart", "efficientnet_b0", "vision", "transformer", "ci"} <= names
    for name, description in available_profiles():
        prof = load_profile(name, device_override="cpu")
        assert prof.entries and description
        # A description is a report's title: it speaks to the reader of the report, not of the README
        assert "README" not in description, name
    study = load_profile("efficientnet_b0", device_override="cpu")
    combos = {(e.workload.mode, e.workload.precision, e.workload.channels_last) for e in study.entries}
    assert len(combos) == 12


def test_parse_profile_from_dict():
    prof = parse_profile({"models": ["resnet18"], "device": "cpu"}, "inline", "inline")
    assert prof.entries[0].batch_sizes is None  # the device's default


def test_data_section_expands_worker_counts(tmp_path):
    path = write(
        tmp_path,
        """
models = ["tests.tiny_models:tiny_cnn"]
device = "cpu"
[data]
source = "loader"
workers = [0, 2, 4]
""",
    )
    prof = load_profile(path)
    assert [(e.workload.data, e.workload.workers) for e in prof.entries] == [("loader", n) for n in (0, 2, 4)]
    assert len({e.label for e in prof.entries}) == 3 and "loader 2 workers" in prof.entries[1].label
    one = load_profile(write(tmp_path, "models = ['resnet18']\n[data]\nworkers = 3", "one.toml"))
    assert [(e.workload.data, e.workload.workers) for e in one.entries] == [("loader", 3)]
    plain = load_profile(write(tmp_path, "models = ['resnet18']", "plain.toml"))
    assert plain.entries[0].workload.data == "synthetic"


@pytest.mark.parametrize(
    "text, key, what",
    [
        ("[data]\nsorce = 'loader'", "data.sorce", "unknown key"),
        ("[data]\nsource = 'disk'", "data.source", "unknown value 'disk'"),
        ("[data]\nworkers = -1", "data.workers", "count >= 0"),
        ("[data]\nworkers = []", "data.workers", "non-empty list"),
        ("[data]\nworkers = [1, 'two']", "data.workers", "count >= 0"),
        ("[data]\nworkers = true", "data.workers", "got a boolean"),
        ("[data]\nsource = 'synthetic'\nworkers = 2", "data.workers", 'needs source = "loader"'),
        ("[data]\ndir = 3", "data.dir", "expected a string"),
        ("data = 'loader'", "data", "expected a table"),
    ],
)
def test_data_section_errors_name_file_and_key(tmp_path, text, key, what):
    path = write(tmp_path, "models = ['resnet18']\n" + text)
    with pytest.raises(BenchError) as info:
        load_profile(path)
    msg = str(info.value)
    assert path in msg and f"'{key}'" in msg and what in msg, msg
    assert "\n" not in msg
