"""shmring bench: runs, reports every transport, and fails on corrupt data."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
from multiprocessing.context import ForkContext
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from shmring import bench
from shmring.bench import multi
from shmring.bench.config import QUICK
from shmring.bench.measurements import check_many, measure_many
from shmring.bench.multi import FasterFifoMulti, MpQueueMulti, MultiTransport, Topology, tag
from shmring.bench.results import ManyToMany, Report
from shmring.bench.sections import ManySection, ring_vs_peers


def test_quick_bench_measures_ring_and_every_peer(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--sizes", "8,64K", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    transports = {row["transport"] for row in report["throughput"]}
    assert {"mp.Queue", "mp.Pipe", "os.pipe"} <= transports
    assert sum(row["ring"] for row in report["throughput"]) == 6  # 3 Ring rows per size
    assert all(row["msgs_per_s"] > 0 for row in report["throughput"])
    assert {p["transport"] for p in report["pingpong"]} >= {"ring", "os.pipe"}
    assert report["idle"]["cpu_percent"] >= 0
    many = report["many_to_many"]
    assert {row["transport"] for row in many} >= {"mp.Queue"}
    assert all(row["producers"] == row["consumers"] == 2 and row["msgs_per_s"] > 0 for row in many)


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
    report = Report(meta={})
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
    report = Report(meta={})
    out = io.StringIO()
    ManySection().run(_ctx(), QUICK, report, out)
    assert report.many_to_many[0].transport == "fake ring" and report.many_to_many[0].ring
    ring_line = next(line for line in out.getvalue().splitlines() if "fake ring" in line)
    assert " mp.Queue" in ring_line.split("fake ring")[1]  # its "Ring vs peers" cell: "x1.2 mp.Queue, ..."
    assert "Ring rows come with" not in out.getvalue()


def test_many_section_runs_without_faster_fifo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faster_fifo", None)  # import faster_fifo raises ImportError
    assert not FasterFifoMulti.available()
    report = Report(meta={})
    ManySection().run(_ctx(), QUICK, report, io.StringIO())
    assert [r.transport for r in report.many_to_many] == ["ring lock-free", "ring semaphore", "mp.Queue"]
