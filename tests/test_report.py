"""bench report: pages built from reference results have every plot and the key numbers.

The reference files under tests/data are described in tests/data/make_fixtures.py: a real CPU
sweep and modelled GPU sweeps (fp32, bf16, and fp32 10% slower), each internally consistent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench.cli import main
from bench.jobs.report import write_report
from bench.present.plots import PLOTS
from bench.present.report import find_chromium, load_runs, run_labels, screenshot
from bench.results.codec import load_result
from bench.results.errors import BenchError

DATA = Path(__file__).parent / "data"
FP32 = str(DATA / "gpu_resnet50_fp32.json")
BF16 = str(DATA / "gpu_resnet50_bf16.json")
SLOW = str(DATA / "gpu_resnet50_fp32_slow10.json")
CPU = str(DATA / "cpu_resnet18.json")
# the reference runs predate the breakdown, are one-process runs (no scaling plot) and have no
# noise scale (no goodput plot)
ALL_PLOTS = [name for name, *_ in PLOTS if name not in ("breakdown", "scaling", "goodput")]


class Page(HTMLParser):
    """The parts of the page a reader relies on: figures and their SVGs, and every table cell."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, int] = {}  # figure id -> number of <svg> inside
        self.tables: dict[str, list[list[str]]] = {}  # class (+ data-run) -> rows of cell texts
        self.row_attrs: list[dict[str, str | None]] = []
        self._figure: str | None = None
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure":
            self._figure = a.get("id") or ""
            self.figures[self._figure] = 0
        elif tag == "svg" and self._figure is not None:
            self.figures[self._figure] += 1
        elif tag == "table":
            self._table = " ".join(x for x in (a.get("class"), a.get("data-run")) if x)
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
            self.row_attrs.append(a)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None
        elif tag == "table":
            self._table = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._figure is None:
            self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def raw_best_and_knee(path: str) -> tuple[tuple[int, float], tuple[int, float]]:
    """Known answers straight from the file, without bench's code: best samples/sec, and the
    smallest batch within 95% of it."""
    points = [p for p in json.loads(Path(path).read_text())["points"] if p["status"] == "ok"]
    best = max(points, key=lambda p: p["samples_per_sec"])
    knee = min((p for p in points if p["samples_per_sec"] >= 0.95 * best["samples_per_sec"]),
               key=lambda p: p["batch_size"])  # fmt: skip
    return (best["batch_size"], best["samples_per_sec"]), (knee["batch_size"], knee["samples_per_sec"])


@pytest.fixture(scope="module")
def gpu_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    runs = load_runs([FP32, BF16, CPU], out / "none.db")
    return runs, write_report(runs, out / "page", title="fp32 vs bf16 vs CPU")


def test_every_plot_is_in_the_page_as_svg_and_beside_the_markdown_as_png(gpu_report):
    _, files = gpu_report
    page = parse(files.html)
    assert list(files.plots) == ALL_PLOTS  # GPU runs carry power and energy: nothing omitted
    for name in ALL_PLOTS:
        assert page.figures[f"plot-{name}"] == 1, name
        png = files.html.parent / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name}.png)" in files.markdown.read_text()
    svg = files.html.read_text()
    assert "samples/sec (measured window)" in svg and "peak memory (GiB)" in svg  # axis labels as text
    assert "device memory 80.0 GiB" in svg  # the device limit is drawn on the memory plot


def test_recommendation_opens_the_page_with_the_right_batches(gpu_report):
    runs, files = gpu_report
    page = parse(files.html)
    html = files.html.read_text()
    assert html.index('id="recommendation"') < html.index('id="plots"') < html.index('id="runs"')
    rows = page.tables["recommendation"][1:]
    assert [r[0] for r in rows] == [run.label for run in runs]
    for row, path in zip(rows, (FP32, BF16, CPU), strict=True):
        (best_b, best_sps), (knee_b, knee_sps) = raw_best_and_knee(path)
        assert row[1:5] == [str(best_b), f"{best_sps:,.1f}", str(knee_b), f"{knee_sps:,.1f}"]
        assert row[5] == "not searched"
    md = files.markdown.read_text()
    assert md.index("## Recommendation") < md.index("## Plots")
    (best_b, best_sps), _ = raw_best_and_knee(FP32)
    assert f"| **{best_b}** | {best_sps:,.1f} |" in md


def test_points_tables_carry_every_point_and_mark_the_oom(gpu_report):
    runs, files = gpu_report
    page = parse(files.html)
    fp32 = load_result(FP32)
    table = page.tables[f"points {runs[0].label}"]
    body = table[1:]
    assert [r[0] for r in body] == [str(p.batch_size) for p in fp32.points]
    oom = [p for p in fp32.points if p.status == "oom"]
    assert oom and body[-1][1].startswith("OOM")
    first = fp32.points[0]
    assert body[0][2] == f"{first.samples_per_sec:,.1f}"
    assert body[0][3] == f"{first.step_stats.median_seconds * 1000:.2f}"


def test_cpu_only_report_leaves_out_gpu_plots_and_says_why(tmp_path):
    files = write_report(load_runs([CPU], tmp_path / "none.db"), tmp_path / "cpu")
    assert "power" not in files.plots and "energy" not in files.plots
    assert {"throughput", "step_time", "epoch_time", "memory", "utilisation"} <= set(files.plots)
    page_text = " ".join(parse(files.html).text)
    assert "Not plotted: power: no GPU power readings" in page_text
    assert "host RAM" in files.html.read_text()  # the CPU's limit on the memory plot


def test_labels_name_what_differs():
    fp32, bf16, slow, cpu = (load_result(p) for p in (FP32, BF16, SLOW, CPU))
    assert run_labels([fp32, bf16]) == ["fp32", "bf16"]
    before, after = run_labels([fp32, slow])
    assert before != after and before.startswith(fp32.started_at[:10])
    assert "resnet50" in run_labels([fp32, cpu])[0] and "CPU" in run_labels([fp32, cpu])[1]
    (single,) = run_labels([cpu])
    assert single.startswith("resnet18 · train · fp32")


# the rest of a max-batch result's required fields (imports and reports type-check them)
SEARCH_REST = {
    "granularity": 1, "budget_bytes": 2**30, "memory_model": None, "seconds": 3.0, "soak": None,
    "failed_batch_size": 41, "exact": True, "cap_reached": False, "budget_source": "memory limit",
    "headroom_reason": "10% of the budget",
}  # fmt: skip


def test_max_batch_result_adds_the_safe_max(tmp_path):
    cpu = json.loads(Path(CPU).read_text())
    search = {
        "schema_version": 1, "kind": "max_batch", "workload": cpu["workload"],
        "environment": cpu["environment"], "max_batch_size": 40, "safe_batch_size": 36,
        "headroom_fraction": 0.1, "probes": [], **SEARCH_REST,
    }  # fmt: skip
    path = tmp_path / "max.json"
    path.write_text(json.dumps(search))
    runs = load_runs([CPU, str(path)], tmp_path / "none.db")
    assert len(runs) == 1 and runs[0].max_batch is not None
    files = write_report(runs, tmp_path / "page")
    row = parse(files.html).tables["recommendation"][1]
    assert row[5] == "36"
    assert "max batch: exact max 40, 41 ran out, safe 36, budget 1.00 GiB (memory limit), 0 probes" in (
        files.html.read_text()
    )
    with pytest.raises(BenchError, match="at least one sweep"):
        load_runs([str(path)], tmp_path / "none.db")


def test_safe_max_comes_from_the_history_when_a_matching_search_is_there(tmp_path):
    """`bench max-batch` then `bench report latest`: the stored search of the same workload and
    hardware fills in the safe max; one of another precision does not."""
    from bench.results.store import import_file

    cpu = json.loads(Path(CPU).read_text())
    db = tmp_path / "h.db"
    for run_id, precision, safe in (("s-fp32", "fp32", 36), ("s-bf16", "bf16", 80)):
        search = {
            "schema_version": 1, "kind": "max_batch", "run_id": run_id, "started_at": cpu["started_at"],
            "workload": {**cpu["workload"], "precision": precision}, "environment": cpu["environment"],
            "max_batch_size": safe + 4, "safe_batch_size": safe, "headroom_fraction": 0.1, "probes": [],
            **SEARCH_REST,
        }  # fmt: skip
        (tmp_path / f"{run_id}.json").write_text(json.dumps(search))
        import_file(db, str(tmp_path / f"{run_id}.json"))
    (run,) = load_runs([CPU], db)
    assert run.max_batch.safe_batch_size == 36
    other = json.loads(Path(CPU).read_text())
    other["workload"]["image_size"] = 64  # a different input size: no search matches
    (tmp_path / "other.json").write_text(json.dumps(other))
    (run,) = load_runs([str(tmp_path / "other.json")], db)
    assert run.max_batch is None


def test_cli_by_file_history_id_and_latest(tmp_path, capsys):
    db = tmp_path / "h.db"
    assert main(["import", FP32, BF16, "--db", str(db)]) == 0
    out = tmp_path / "r"
    assert main(["report", "1", "latest", "--db", str(db), "--out", str(out)]) == 0
    rows = parse(out / "index.html").tables["recommendation"][1:]
    assert [r[0] for r in rows] == ["fp32", "bf16"]
    assert "history #1" in (out / "index.html").read_text()
    assert main(["report", CPU, "--out", str(tmp_path / "r2")]) == 0
    assert (tmp_path / "r2" / "report.md").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"schema_version": 1, "kind": "sweep", "points": [', "not valid JSON"),
        ("\x00\x01garbage", "not valid JSON"),
        ('{"hello": "world"}', "not a bench result"),
        ('{"schema_version": 99, "kind": "sweep"}', "newer than this bench"),
        ('{"schema_version": 1, "kind": "sweep", "points": [{"batch_size": 2}]}', ""),
        ("TYPED", "point 2: field 'samples_per_sec' should be float"),  # a real file, one field mistyped
    ],
)
def test_bad_result_files_are_one_line_and_exit_2(content, message, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    if content == "TYPED":
        data = json.loads(Path(CPU).read_text())
        data["points"][0]["samples_per_sec"] = "fast"
        content = json.dumps(data)
    bad.write_text(content)
    for command in (["report", str(bad), "--out", str(tmp_path / "r")], ["compare", CPU, str(bad)]):
        assert main(command) == 2  # never 1: a corrupt file is not a regression
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
        assert message in err and "bad.json" in err


def test_unknown_history_id_and_unwritable_out(tmp_path, capsys):
    db = tmp_path / "h.db"
    main(["import", CPU, "--db", str(db)])
    capsys.readouterr()
    assert main(["report", "42", "--db", str(db)]) == 2
    assert "no run '42'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["report", CPU, "--out", str(blocker / "sub")]) == 2
    assert "cannot write the report" in capsys.readouterr().err


@pytest.mark.slow
def test_report_compare_and_store_never_import_torch(tmp_path):
    code = (
        "import sys\n"
        "from bench.cli import main\n"
        f"rc = main(['report', {FP32!r}, {SLOW!r}, '--out', {str(tmp_path / 'r')!r}])\n"
        f"rc += main(['compare', {FP32!r}, {SLOW!r}, '--strict', '--db', {str(tmp_path / 'h.db')!r}]) != 1\n"
        f"rc += main(['import', {CPU!r}, '--db', {str(tmp_path / 'h.db')!r}])\n"
        f"rc += main(['history', '--db', {str(tmp_path / 'h.db')!r}])\n"
        "assert rc == 0, rc\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.skipif(
    find_chromium() is None, reason="headless Chromium not installed (apt-get install chromium)"
)
def test_page_renders_in_headless_chromium_with_its_plots(gpu_report, tmp_path):
    """Look at the page as a reader would: the screenshot shows the plots' coloured lines."""
    import matplotlib.image as mpimg
    import numpy as np

    _, files = gpu_report
    png = screenshot(files.html, tmp_path / "page.png", height=3000)
    img = mpimg.imread(png)[..., :3]
    assert img.shape[:2] == (3000, 1280)

    def share(hex_color: str) -> float:
        rgb = np.array([int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
        return float((np.abs(img - rgb).max(axis=-1) < 0.08).mean())

    # The first three runs' colours (blue, orange, green) are drawn: the SVGs rendered, not blank boxes.
    assert share("#1f77b4") > 1e-4 and share("#ff7f0e") > 1e-4 and share("#2ca02c") > 1e-5
    assert (img < 0.5).mean() > 0.005  # text and axes, not an empty page
    if os.environ.get("BENCH_KEEP_SCREENSHOT"):
        Path(os.environ["BENCH_KEEP_SCREENSHOT"]).write_bytes(png.read_bytes())


def test_text_from_the_user_is_escaped_in_the_page(tmp_path):
    files = write_report(
        load_runs([CPU], tmp_path / "none.db"), tmp_path / "esc", title="<script>alert(1)</script>"
    )
    html = files.html.read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<svg") == len(files.plots)  # the plots themselves are not escaped


def test_markdown_report_carries_user_text_literally(tmp_path):
    """Model names, notices, errors and run ids are user text: in report.md they cannot break a
    table, start a heading or a list, open a code span or inject HTML (the HTML page escapes them)."""
    import dataclasses

    markdown_it = pytest.importorskip("markdown_it")  # rich's own dependency
    from bench.present.report import ReportRun
    from bench.results.schema import ERROR

    name = "a|b*c_ <img src=x onerror=alert(1)>"
    run = load_result(CPU)
    points = list(run.points)
    points[-1] = dataclasses.replace(points[-1], status=ERROR, error="bad | cell\n# not a heading")
    run = dataclasses.replace(
        run,
        workload=dataclasses.replace(run.workload, model=name),
        points=tuple(points),
        run_id="id`x",
        notices=("# shout\n- [link](http://x) <b>bold</b> `code` | pipe",),
    )
    files = write_report([ReportRun(name, run, source="my `file`.json")], tmp_path / "r")
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(files.markdown.read_text())

    def walk(ts):
        for t in ts:
            yield t
            yield from walk(t.children or [])

    every = list(walk(tokens))
    assert not [t.content for t in every if t.type.startswith("html")], "raw HTML reached the page"
    assert not [t for t in every if t.type in ("em_open", "strong_open") and t.markup == "*"]
    assert [t for t in every if t.type == "heading_open" and t.tag == "h1"] == tokens[:1]
    assert not [t for t in every if t.type in ("bullet_list_open", "link_open")]
    cells = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "td_open"]
    rendered = [
        "".join(c.content for c in markdown_it.MarkdownIt("commonmark").parseInline(cell)[0].children)
        for cell in cells
    ]
    assert rendered[0] == name  # the recommendation row's label cell, whole
    assert "ERROR: bad | cell # not a heading" in rendered
    text = "".join(t.content for t in every if t.type in ("text", "code_inline"))
    assert "id`x" in text and "my `file`.json" in text
    assert "# shout - [link](http://x) <b>bold</b> `code` | pipe" in text


def test_the_recommendation_caveats_are_in_both_reports(tmp_path):
    """Issue 15 item 17: what the measurements cannot support (indistinguishable batches, a best
    batch at the edge) is said in the HTML and the Markdown, not only in the terminal."""
    from dataclasses import replace

    from bench.results.schema import RepeatSample

    run = load_result(CPU)
    ok = [p for p in run.points if p.samples_per_sec]
    a, b = ok[-2], ok[-1]
    twins = {
        a.batch_size: replace(a, samples_per_sec=100.0, repeats=tuple(RepeatSample("ok", samples_per_sec=v) for v in (90.0, 100.0, 110.0))),
        b.batch_size: replace(b, samples_per_sec=101.0, repeats=tuple(RepeatSample("ok", samples_per_sec=v) for v in (91.0, 101.0, 111.0))),
    }  # fmt: skip
    run = replace(run, points=tuple(twins.get(p.batch_size, p) for p in run.points), recommendation=None)
    path = tmp_path / "twins.json"
    from bench.results.codec import dumps

    path.write_text(dumps(run))
    files = write_report(load_runs([str(path)], tmp_path / "none.db"), tmp_path / "rep")
    md, html = files.markdown.read_text(), files.html.read_text()
    for text in (md, html):
        assert f"batches {a.batch_size}, {b.batch_size} are indistinguishable" in text


def test_committed_reports_load():
    """The JSON committed under reports/ (measured on real machines) still loads with this bench."""
    from bench.jobs.maxbatch import load_max_batch

    root = Path(__file__).parent.parent / "reports"
    found = [p for p in root.rglob("*.json") if p.name != "runs.json"]
    assert found, "no committed results"
    for p in found:
        kind = json.loads(p.read_text()).get("kind")
        (load_max_batch if kind == "max_batch" else load_result)(str(p))
