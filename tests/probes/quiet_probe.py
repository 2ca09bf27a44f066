"""Run by tests/test_quiet_suite.py as `python -m pytest -q tests/probes/quiet_probe.py`: one
pytest-benchmark test and one torchvision JPEG round trip, the two sources of noise in the suite's
output (issue 23 item 8)."""

import torch
import torchvision.io


def test_a_benchmark(benchmark):
    benchmark(sum, range(100))


def test_a_jpeg_round_trip():
    img = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    assert torchvision.io.decode_jpeg(torchvision.io.encode_jpeg(img)).shape == (3, 8, 8)
