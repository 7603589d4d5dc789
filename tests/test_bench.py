"""shmring bench: runs, reports every transport, and fails on corrupt data;
--json holds every figure and the machine; --plot draws the throughput."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import io
import json
import multiprocessing
import os
import platform
import re
import shlex
import struct
import subprocess
import sys
import time
from multiprocessing.context import ForkContext
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import shmring
from shmring import bench
from shmring.bench import multi, objects
from shmring.bench.config import QUICK, fmt_size
from shmring.bench.measurements import check_many, measure_many
from shmring.bench.multi import FasterFifoMulti, MpQueueMulti, MultiTransport, Topology, tag
from shmring.bench.report import fmt_gb, fmt_rate
from shmring.bench.results import ManyToMany, Report
from shmring.bench.sections import SECTIONS, ManySection, ring_vs_peers

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
needs_matplotlib = pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="matplotlib (shmring[plot]) is not installed")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclasses.dataclass
class QuickRun:
    """One ``shmring bench --quick`` run with --json (and --plot), shared by the tests of this module."""

    argv: list[str]
    data: dict[str, Any]  # the --json file
    png: Path
    text: str  # the text report


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    out = tmp_path_factory.mktemp("bench")
    argv = ["--quick", "--sizes", "8,64K", "--json", str(out / "bench.json")]
    if HAVE_MATPLOTLIB:
        argv += ["--plot", str(out / "bench.png")]
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        status = bench.main(argv)
    assert status == 0, text.getvalue()[-3000:]
    return QuickRun(argv, json.loads((out / "bench.json").read_text()), out / "bench.png", text.getvalue())


def test_quick_bench_measures_ring_and_every_peer(quick_run: QuickRun) -> None:
    report = quick_run.data
    transports = {row["transport"] for row in report["throughput"]}
    assert {"mp.Queue", "mp.Pipe", "os.pipe"} <= transports
    assert sum(row["ring"] for row in report["throughput"]) == 6  # 3 Ring rows per size
    assert all(row["msgs_per_s"] > 0 for row in report["throughput"])
    assert {p["transport"] for p in report["pingpong"]} >= {"ring", "os.pipe"}
    assert report["idle"]["cpu_percent"] >= 0
    many = report["many_to_many"]
    assert {row["transport"] for row in many} >= {"mp.Queue"}
    assert all(row["producers"] == row["consumers"] == 2 and row["msgs_per_s"] > 0 for row in many)


# -- --json: the machine and every figure ----------------------------------------------------


def _meminfo_total() -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        (line,) = [line for line in f if line.startswith("MemTotal:")]
    return int(line.split()[1]) * 1024


def test_json_describes_the_machine_and_the_run(quick_run: QuickRun) -> None:
    machine = quick_run.data["machine"]
    assert quick_run.data["schema"] == 1
    assert set(machine) == {
        "cpu_model", "logical_cpus", "usable_cpus", "memory_bytes", "memory_available_bytes", "os", "kernel",
        "arch", "platform", "python", "python_implementation", "numpy", "shmring", "peers", "date", "command",
        "settings", "load_average", "other_cpu_percent", "seconds",
    }  # fmt: skip
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    if models:
        assert machine["cpu_model"] == models[0]
    assert machine["logical_cpus"] == os.cpu_count()
    assert machine["usable_cpus"] == len(os.sched_getaffinity(0))
    assert machine["memory_bytes"] == _meminfo_total()
    assert 0 < machine["memory_available_bytes"] <= machine["memory_bytes"]
    assert (machine["os"], machine["kernel"], machine["arch"]) == (
        platform.system(),
        platform.release(),
        platform.machine(),
    )
    assert machine["python"] == platform.python_version()
    assert machine["python_implementation"] == platform.python_implementation()
    assert (machine["numpy"], machine["shmring"]) == (np.__version__, shmring.__version__)
    want_peers = {"faster-fifo": importlib.metadata.version("faster-fifo")} if FasterFifoMulti.available() else {}
    assert machine["peers"] == want_peers
    date = datetime.datetime.fromisoformat(machine["date"])
    assert date.utcoffset() == datetime.timedelta(0)
    assert datetime.timedelta(0) <= datetime.datetime.now(datetime.timezone.utc) - date < datetime.timedelta(hours=1)
    assert machine["command"] == shlex.join(["shmring", "bench", *quick_run.argv])
    assert machine["settings"]["sizes"] == [8, 64 * 1024]
    assert machine["settings"]["cell_seconds"] == QUICK.cell_seconds
    assert machine["settings"]["start_method"] == "fork"
    assert list(machine["other_cpu_percent"]) == [s.load for s in SECTIONS if s.load is not None]
    assert all(pct is None or pct >= 0 for pct in machine["other_cpu_percent"].values())
    assert all(len(machine["load_average"][when]) == 3 for when in ("start", "end"))
    assert machine["seconds"] > 0


def _printed(text: str, *cells: str) -> bool:
    """Whether one line of ``text`` holds ``cells`` in this order, none of
    them part of a longer number or word (``8 B`` is not in ``128 B``)."""
    pattern = ".*".join(rf"(?<![\w.]){re.escape(cell.strip())}(?![\w.])" for cell in cells)
    return any(re.search(pattern, line) for line in text.splitlines())


def _gb_or_dash(value: float) -> str:
    return fmt_gb(value) if value else "-"


# What the text report prints of each JSON record, per section: its cells in line order.
PRINTED_CELLS: dict[str, Any] = {
    "copy_floor": lambda r: [
        fmt_size(r["size"]),
        fmt_rate(r["copies_per_s"]),
        fmt_gb(r["gb_per_s"]),
        "-" if r["cold_gb_per_s"] is None else fmt_gb(r["cold_gb_per_s"]),
    ],
    "throughput": lambda r: [
        fmt_size(r["size"]),
        r["transport"],
        str(r["capacity"]),
        str(r["batch"]),
        fmt_rate(r["msgs_per_s"]),
        fmt_gb(r["gb_per_s"]),
    ],
    "many_to_many": lambda r: [
        fmt_size(r["size"]),
        r["transport"],
        f"{r['producers']}x{r['consumers']}",
        str(r["capacity"]),
        fmt_rate(r["msgs_per_s"]),
        fmt_gb(r["gb_per_s"]),
    ],
    "objects": lambda r: [
        r["payload"],
        r["transport"],
        f"{r['producers']}x{r['consumers']}",
        fmt_rate(r["msgs_per_s"]),
        _gb_or_dash(r["gb_per_s"]),
    ],
    "pingpong": lambda r: [
        r["transport"],
        f"{r['median_us']:.1f}",
        f"{r['p99_us']:.1f}",
        f"{r['min_us']:.1f}",
        str(r["round_trips"]),
    ],
    "array": lambda r: [
        r["op"],
        r["implementation"],
        str(r["processes"]),
        fmt_rate(r["ops_per_s"]),
        _gb_or_dash(r["gb_per_s"]),
    ],
    "idle": lambda r: [f"{r['wall_s']:.2f}", f"{r['cpu_s'] * 1e3:.1f}", f"{r['cpu_percent']:.2f}%", str(r["wakeups"])],
}


def test_json_holds_every_figure_the_text_report_prints(quick_run: QuickRun) -> None:
    data, text = quick_run.data, quick_run.text
    assert set(data) == {"schema", "machine", *PRINTED_CELLS}
    assert all(data[section] for section in PRINTED_CELLS)  # every section measured something
    lines = [PRINTED_CELLS["idle"](data["idle"])]
    lines += [cells(row) for section, cells in PRINTED_CELLS.items() if section != "idle" for row in data[section]]
    machine = data["machine"]
    lines.append([f"{section} {pct:.0f}%" for section, pct in machine["other_cpu_percent"].items() if pct is not None])
    lines.append([machine["cpu_model"], f"{machine['logical_cpus']} CPUs", machine["kernel"]])
    missing = [cells for cells in lines if not _printed(text, *cells)]
    assert not missing, missing
    # ... and the check can fail: a figure the text does not print is missing.
    assert not _printed(text, fmt_size(8), "ring put/get", fmt_rate(data["throughput"][0]["msgs_per_s"] * 1.7))


def test_json_reads_back_as_the_same_report(quick_run: QuickRun) -> None:
    report = Report.from_json(quick_run.data)
    assert report.throughput[0].size == 8 and isinstance(report.throughput[0].msgs_per_s, float)
    assert report.idle is not None and report.idle.wakeups >= 0
    assert report.to_json() == quick_run.data


# -- --plot and --from-json ---------------------------------------------------------------------


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG file, from its IHDR chunk; the file must start with the PNG magic."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@needs_matplotlib
def test_plot_of_a_quick_run_is_a_png_with_the_ring_lines(quick_run: QuickRun) -> None:
    from matplotlib.image import imread

    from shmring.bench import plot

    assert 30_000 < quick_run.png.stat().st_size < 5_000_000
    assert _png_size(quick_run.png) == (1950, 990)  # 13 x 6.6 inches at 150 dpi
    pixels = (imread(quick_run.png)[..., :3] * 255).round()
    for color, _ in plot.RING_STYLES[:3]:  # the three Ring rows' colours are drawn
        rgb = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
        assert (np.abs(pixels - rgb).max(axis=-1) <= 2).sum() > 500, color


@needs_matplotlib
def test_plot_figure_has_one_line_per_transport_on_two_log_panels(quick_run: QuickRun) -> None:
    from shmring.bench import plot

    data = quick_run.data
    fig = plot.figure(Report.from_json(data))
    fig.canvas.draw()
    rate_ax, gb_ax = fig.axes
    assert rate_ax.get_shared_x_axes().joined(rate_ax, gb_ax)
    assert [ax.get_xscale() for ax in fig.axes] == [ax.get_yscale() for ax in fig.axes] == ["log", "log"]
    assert [t.get_text() for t in rate_ax.get_xticklabels()] == ["8 B", "64 KiB"]
    assert "messages/s" in rate_ax.get_ylabel() and "GB/s" in gb_ax.get_ylabel()

    transports = list(dict.fromkeys(row["transport"] for row in data["throughput"]))
    assert len(transports) == 6  # 3 Ring rows, mp.Queue, mp.Pipe, os.pipe

    def lines(ax: Any) -> dict[str, Any]:
        return {line.get_label().removesuffix(plot.ZERO_COPY_NOTE): line for line in ax.get_lines()}

    rate_lines, gb_lines = lines(rate_ax), lines(gb_ax)
    assert list(rate_lines) == transports
    assert list(gb_lines) == [*transports, plot.FLOOR_LABEL]
    for row in data["throughput"]:
        for line, value in (
            (rate_lines[row["transport"]], row["msgs_per_s"]),
            (gb_lines[row["transport"]], row["gb_per_s"]),
        ):
            points = dict(zip(line.get_xdata(), line.get_ydata(), strict=True))
            assert points[row["size"]] == pytest.approx(value)
    ring = {row["transport"]: row["ring"] for row in data["throughput"]}
    widths = {label: line.get_linewidth() for label, line in rate_lines.items()}
    assert min(w for t, w in widths.items() if ring[t]) > 1.5 * max(w for t, w in widths.items() if not ring[t])

    legend_labels = [t.get_text().removesuffix(plot.ZERO_COPY_NOTE) for lg in fig.legends for t in lg.get_texts()]
    assert legend_labels == [*transports, plot.FLOOR_LABEL]
    machine = data["machine"]
    texts = [fig.get_suptitle(), *(t.get_text() for t in fig.texts)]
    date = machine["date"][:10]
    assert any(machine["cpu_model"] in t and f"{machine['logical_cpus']} CPUs" in t and date in t for t in texts)
    assert f"$ {machine['command']}" in texts


@needs_matplotlib
def test_from_json_replots_without_running(
    quick_run: QuickRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    json_path = quick_run.argv[quick_run.argv.index("--json") + 1]
    out = tmp_path / "again.png"
    assert bench.main(["--from-json", json_path, "--plot", str(out)]) == 0
    assert capsys.readouterr() == ("", "")  # nothing measured, nothing printed
    assert _png_size(out) == _png_size(quick_run.png)


def _drop_throughput(data: dict[str, Any]) -> None:
    del data["throughput"]


@needs_matplotlib
@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("{", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"schema": 2}, "schema 2; this shmring reads schema 1"),
        (lambda d: d.pop("schema"), 'no "schema" field'),
        (_drop_throughput, 'the report: no "throughput" field'),
        (lambda d: d.update(throughput={}), "throughput: expected a list"),
        (lambda d: d["throughput"][1].update(msgs_per_s="fast"), "throughput[1].msgs_per_s: expected a number"),
        (lambda d: d["throughput"][0].pop("size"), 'throughput[0]: no "size" field'),
        (lambda d: d["idle"].update(wakeups=1.5), "idle.wakeups: expected int"),
        (None, "cannot read"),
    ],
)
def test_from_json_rejects_a_bad_file_in_one_line(
    quick_run: QuickRun, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: Any, error: str
) -> None:
    path, out = tmp_path / "bad.json", tmp_path / "bad.png"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, dict):
        path.write_text(json.dumps(content))
    elif content is not None:
        data = copy.deepcopy(quick_run.data)
        content(data)
        path.write_text(json.dumps(data))
    assert bench.main(["--from-json", str(path), "--plot", str(out)]) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and stderr.startswith("shmring bench: --from-json") and stderr.count("\n") == 1, stderr
    assert error in stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--from-json", "x.json"], "--from-json only plots: it takes --plot FILE.png"),
        (["--from-json", "x.json", "--plot", "x.png", "--quick"], "not --quick"),
        (["--quick", "--plot", "plot.txt"], "must end in .png, .svg or .pdf"),
        (["--quick", "--plot", "/nonexistent/dir/x.png"], "cannot write --plot"),
    ],
)
def test_plot_usage_errors_end_before_the_run(argv: list[str], error: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(argv) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and error in stderr.splitlines()[-1], stderr


def test_plot_without_matplotlib_fails_before_the_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith(("matplotlib.", "shmring.bench.plot"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    monkeypatch.delattr(bench, "plot", raising=False)
    out = tmp_path / "x.png"
    assert bench.main(["--quick", "--json", str(tmp_path / "x.json"), "--plot", str(out)]) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == ""  # nothing ran
    assert stderr.count("\n") == 1 and stderr.startswith("shmring bench: --plot needs matplotlib"), stderr
    assert "pip install 'shmring[plot]'" in stderr and "Traceback" not in stderr
    assert not out.exists() and not (tmp_path / "x.json").exists()


def test_bench_fails_loudly_on_a_core_that_publishes_before_copying() -> None:
    env = dict(os.environ, SHMRING_BROKEN="publish_before_copy", SHMRING_DELAY="50:200")
    proc = subprocess.run(
        [sys.executable, "-m", "shmring.bench", "--quick", "--sizes", "1K"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "FAILED" in proc.stdout + proc.stderr


# -- many producers and consumers --------------------------------------------------------


def _ctx() -> ForkContext:
    return multiprocessing.get_context("fork")


def test_many_section_runs_quick_with_every_available_peer() -> None:
    report = Report(machine={})
    out = io.StringIO()
    ManySection().run(_ctx(), QUICK, report, out)
    rows = report.many_to_many
    expected = {"ring lock-free", "ring semaphore", "mp.Queue"} | (
        {"faster-fifo"} if FasterFifoMulti.available() else set()
    )
    assert {r.transport for r in rows} == expected
    assert all((r.size, r.producers, r.consumers) == (64, 2, 2) and r.messages > 0 for r in rows)
    assert re.search(r"x[\d.,]+ mp\.Queue", out.getvalue())  # the Ring row compared with its peers


def test_many_faster_fifo_2x2() -> None:
    pytest.importorskip("faster_fifo")
    row = measure_many(_ctx(), FasterFifoMulti, 64 * 1024, 2, 2, 0.05)
    assert row.transport == "faster-fifo" and row.messages > 0 and row.gb_per_s > 0


class _Faulty(MpQueueMulti):
    """mp.Queue whose producer 0 sends its message 3 wrongly (``fault``)."""

    label = "faulty"
    fault: ClassVar[str]

    def send(self, first: int, count: int) -> None:
        for seq in range(first, first + count):
            if self.base or seq not in (3, 4):
                super().send(seq, 1)
            elif self.fault == "lose" and seq == 3:
                pass
            elif self.fault == "duplicate" and seq == 3:
                super().send(3, 1)
                super().send(3, 1)
            elif self.fault == "reorder":
                super().send(7 - seq, 1)  # 4 before 3
            else:
                super().send(seq, 1)


@pytest.mark.parametrize(
    ("fault", "consumers", "match"),
    [
        ("lose", 2, "producer 0 message 3 was lost"),
        ("duplicate", 2, "producer 0 message 3 (arrived 2 times|arrived after its message 3)"),
        ("reorder", 1, "producer 0 message 3 arrived after its message 4"),
    ],
)
def test_many_detects_a_lost_duplicated_or_reordered_message(fault: str, consumers: int, match: str) -> None:
    kind = type(f"_{fault}", (_Faulty,), {"fault": fault})
    with pytest.raises(bench.BenchError, match=match):
        measure_many(_ctx(), kind, 64, 2, consumers, 0.02)


def test_check_many_names_the_first_bad_message() -> None:
    ok = [np.array([0, 2, tag(1, 0)], np.uint64), np.array([1, tag(1, 1)], np.uint64)]
    check_many("x", [3, 2], ok)
    with pytest.raises(bench.BenchError, match="producer 1 message 1 was lost"):
        check_many("x", [3, 2], [ok[0], np.array([1], np.uint64)])
    with pytest.raises(bench.BenchError, match="producer 0 message 2 arrived 2 times"):
        check_many("x", [3, 2], [*ok, np.array([2], np.uint64)])
    with pytest.raises(bench.BenchError, match="producer 0 message 3 arrived but only 3 were sent"):
        check_many("x", [3, 2], [*ok, np.array([3], np.uint64)])
    with pytest.raises(bench.BenchError, match="from producer 2 of 2"):
        check_many("x", [3, 2], [*ok, np.array([tag(2, 0)], np.uint64)])


def _row(transport: str, ring: bool, msgs_per_s: float, size: int = 64, pc: int = 2) -> ManyToMany:
    return ManyToMany(size, transport, ring, pc, pc, 4096, 1000, 1.0, msgs_per_s, msgs_per_s * size / 1e9)


def test_ring_vs_peers_compares_each_ring_row_with_the_peers_of_its_cell() -> None:
    rows = [
        _row("ring lock-free", True, 1_000_000),
        _row("ring semaphore", True, 200_000),
        _row("mp.Queue", False, 40_000),
        _row("faster-fifo", False, 100_000),
        _row("mp.Queue", False, 10_000, size=65536),  # another size: not compared
        _row("mp.Queue", False, 5_000, pc=4),  # another topology: not compared
        _row("ring lock-free", True, 50_000, pc=4),
    ]
    assert ring_vs_peers(rows) == [
        "x25 mp.Queue, x10 faster-fifo",
        "x5.0 mp.Queue, x2.0 faster-fifo",
        "",
        "",
        "",
        "",
        "x10 mp.Queue",
    ]
    assert ring_vs_peers(rows[2:4]) == ["", ""]  # peers only: the column stays empty


class _PipeRing(MultiTransport):
    """A stand-in Ring row built as MultiTransport's docstring says a Ring row
    is: a label, ``ring = True`` and ``self.queue`` (put copies before it returns)."""

    label = "fake ring"
    ring = True

    def __init__(self, ctx: ForkContext, topo: Topology) -> None:
        super().__init__(ctx, topo)
        self.queue = ctx.SimpleQueue()


def test_many_section_prints_ring_rows_against_the_peers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multi, "MULTI_RING_TRANSPORTS", (_PipeRing,))
    report = Report(machine={})
    out = io.StringIO()
    ManySection().run(_ctx(), QUICK, report, out)
    assert report.many_to_many[0].transport == "fake ring" and report.many_to_many[0].ring
    ring_line = next(line for line in out.getvalue().splitlines() if "fake ring" in line)
    assert " mp.Queue" in ring_line.split("fake ring")[1]  # its "Ring vs peers" cell: "x1.2 mp.Queue, ..."
    assert "Ring rows come with" not in out.getvalue()


def test_many_section_runs_without_faster_fifo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faster_fifo", None)  # import faster_fifo raises ImportError
    assert not FasterFifoMulti.available()
    report = Report(machine={})
    ManySection().run(_ctx(), QUICK, report, io.StringIO())
    assert [r.transport for r in report.many_to_many] == ["ring lock-free", "ring semaphore", "mp.Queue"]


class GreedyBatches(objects.QueueBatches):
    """Consumers that start late, one after the other, and take the whole
    queue in one get_many: the first takes every producer's stops."""

    def __init__(self, ctx: ForkContext, nbytes: int) -> None:
        super().__init__(ctx, nbytes)
        self.arrived = ctx.Value("i", 0)
        self.waited = False

    def receive(self) -> list[Any]:
        if not self.waited:
            self.waited = True
            with self.arrived.get_lock():
                order = self.arrived.value
                self.arrived.value += 1
            time.sleep(0.5 + 0.3 * order)  # the producers have long sent everything, stops included
        got: list[Any] = self.queue.get_many(1 << 30)
        return got


def test_batch_consumers_pass_on_the_stops_a_batch_took_for_the_others() -> None:
    cell = objects.measure_objects(multiprocessing.get_context("fork"), GreedyBatches, "small dict", 2, 2, 0.01)
    assert cell.messages > 0 and cell.producers == cell.consumers == 2
