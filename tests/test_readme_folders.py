"""The README names every folder bench writes to and says where the history is found from
(issue 23 items 9 and 11)."""

from pathlib import Path

from bench.cli.common import DB_ENV
from bench.jobs.sweep_loop import default_out_path
from bench.results.schema import Workload
from bench.results.store import DEFAULT_DB

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_the_readme_names_the_folders_bench_writes_to():
    folder = default_out_path(Workload(model="resnet18")).parts[0]
    words = " ".join(README.split())
    assert f"`{folder}/`" in words and f"`{DEFAULT_DB}`" in words and "`reports/quickstart/`" in words
    assert "relative to the current directory" in words and f"`${DB_ENV}`" in words
