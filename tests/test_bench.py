"""shmring bench: runs, reports every transport, and fails on corrupt data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shmring import bench


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
