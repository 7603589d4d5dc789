"""The shmring command: ls, stat, rm, gc."""

from __future__ import annotations

import os

import numpy as np
import pytest

import shmring
from shmring import cli


def abandon_a_ring(name: str) -> None:
    """Create a ring in a child that dies without closing it."""
    pid = os.fork()
    if pid == 0:
        r = shmring.Ring(name, capacity=4, shape=(2,))
        r.put([1, 2])
        os._exit(0)  # no close, no atexit: the segment is left behind
    os.waitpid(pid, 0)


def test_ls_and_stat_show_a_ring(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with shmring.Ring(name, capacity=4, shape=(3,), dtype=np.float32) as r:
        r.put([1, 2, 3])
        assert cli.main(["ls"]) == 0
        line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(name))
        assert "float32" in line and "(3,)" in line and "abandoned" not in line
        assert cli.main(["stat", name]) == 0
        out = capsys.readouterr().out
        assert "qsize: 1" in out and "producer" in out and f"pid {os.getpid()}" in out


def test_gc_removes_only_abandoned_rings(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    abandon_a_ring(name)
    with shmring.Ring(name + "-live", capacity=2) as live:
        live.put(1)
        assert cli.main(["gc", "--dry-run"]) == 0
        assert f"would remove {name}" in capsys.readouterr().out
        assert os.path.exists(f"/dev/shm/{name}")
        assert cli.main(["gc"]) == 0
        out = capsys.readouterr().out
        assert f"removing {name}" in out and live.name not in out
        assert not os.path.exists(f"/dev/shm/{name}")
        assert os.path.exists(f"/dev/shm/{live.name}")


def test_rm_unlinks_and_reports_missing_names(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    abandon_a_ring(name)
    assert cli.main(["rm", name]) == 0
    assert not os.path.exists(f"/dev/shm/{name}")
    assert cli.main(["rm", name]) == 1
    assert "no such segment" in capsys.readouterr().err


def test_stat_of_a_missing_name_fails_cleanly(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["stat", name]) == 1
    assert "shmring stat" in capsys.readouterr().err


def test_ls_ignores_foreign_segments(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = f"/dev/shm/{name}"
    with open(path, "wb") as f:
        f.write(b"\0" * 8192)
    try:
        assert cli.main(["ls"]) == 0
        assert name not in capsys.readouterr().out
    finally:
        os.unlink(path)
