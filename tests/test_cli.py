"""The shmring command, end to end: the console script run as a user runs
it (ls, stat, rm, gc, and every kind of bad input).

Every test names its segments with its own unique prefix and removes them;
gc always runs with --match on that prefix (other runs share this /dev/shm).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shmring
from shmring import _inspect, cli
from shmring import _layout as L
from shmring._endpoints import HOLDER, STATE_ACTIVE, own_start_time, pack_word

SHMRING = os.path.join(os.path.dirname(sys.executable), "shmring")
SHM = Path("/dev/shm")


def run(*args: str, rc: int = 0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the console script; check its exit status and that it never
    shows a traceback."""
    proc = subprocess.run(
        [SHMRING, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == rc, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def one_line_error(proc: subprocess.CompletedProcess[str], command: str, *fragments: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"shmring {command}: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def remove_prefixed(prefix: str) -> None:
    """Remove every /dev/shm entry this test made, and their semaphores (as
    `shmring rm --force` does, in-process)."""
    for path in SHM.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            _inspect.unlink_exact(_inspect.probe(_inspect.resolve(path.name)))


@pytest.fixture
def prefix() -> Iterator[str]:
    """A unique name prefix; whatever carries it is removed afterwards."""
    p = f"shmring-cli-{uuid.uuid4().hex[:10]}"
    yield p
    remove_prefixed(p)


@contextlib.contextmanager
def in_child(body: Callable[[], None], wait: bool = True) -> Iterator[int]:
    """Fork a child that runs ``body``, tells us it is done, then waits for
    us (while we are inside the block) and exits without closing anything.
    Yields its pid; the child is SIGKILLed at the end unless it is gone."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            body()
            os.write(w, b"k")
            if wait:
                signal.pause()
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"k", "child failed"
        yield pid
    finally:
        os.close(r)
        with contextlib.suppress(ProcessLookupError, ChildProcessError):  # gone already if the test killed it
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def abandon(body: Callable[[], None]) -> None:
    """Run ``body`` in a child that is then SIGKILLed: what it made is abandoned."""
    with in_child(body):
        pass


def shm_semaphores(sem_id: int) -> list[str]:
    return [p.name for p in SHM.glob(f"sem.shmring-{sem_id:016x}-*")]


def sem_id_of(path: Path) -> int:
    with open(path, "rb") as f:
        return int(struct.unpack_from("<Q", f.read(L.PAGE), L.SEM_ID_OFF)[0])


def dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def write_half_created(path: Path, holder_pid: int, start_time: int = 1) -> None:
    """What a creator killed between registering and publishing leaves:
    a zeroed header page with its holder entry (start time 1: never a live
    process's) and no magic."""
    page = bytearray(2 * L.PAGE)
    struct.pack_into("<Q", page, L.ENDPOINTS_OFF, pack_word(holder_pid, HOLDER, STATE_ACTIVE, start_time))
    path.write_bytes(page)


# -- a zoo of regions, shared by the ls and stat tests ----------------------------------
class Zoo:
    """One region of each kind, a semaphore ring, a file region in a
    directory, and an observer process attached to the ring."""

    def __init__(self, prefix: str, directory: Path) -> None:
        self.prefix = prefix
        self.dir = directory
        self.ring_name = f"{prefix}-camera-frames-with-a-long-descriptive-name"
        self.ring = shmring.Ring(self.ring_name, capacity=4, shape=(480, 640, 3), dtype=np.uint8)
        self.ring.put(np.zeros((480, 640, 3), np.uint8))
        self.queue = shmring.Queue(name=f"{prefix}-q", capacity=1 << 16)
        self.queue.put(b"hello")
        self.queue.put({"a": 1})
        self.array = shmring.Array(f"{prefix}-a", shape=(3,), dtype=np.int64)
        self.sem = shmring.Ring(f"{prefix}-s", capacity=10, sync="semaphore", multi_producer=True)
        self.sem.put(7)
        self.file = shmring.Ring(str(directory / f"{prefix}.ring"), capacity=8, dtype=np.float32, backend="file")
        self.file.put(1.5)
        self.observer = in_child(lambda: _attach_and_keep(self.ring_name))
        self.observer_pid = self.observer.__enter__()

    def close(self) -> None:
        self.observer.__exit__(None, None, None)
        for handle in (self.ring, self.queue, self.array, self.sem, self.file):
            handle.close()
        (self.dir / f"{self.prefix}.ring").unlink()


_kept: list[Any] = []


def _attach_and_keep(name: str) -> None:
    _kept.append(shmring.Ring.attach(name))  # holds a handle, neither puts nor gets: an observer


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zoo]:
    prefix = f"shmring-cli-{uuid.uuid4().hex[:10]}"
    z = Zoo(prefix, tmp_path_factory.mktemp("regions"))
    try:
        yield z
    finally:
        z.close()
        remove_prefixed(prefix)


def test_ls_shows_every_kind_in_aligned_columns(zoo: Zoo) -> None:
    out = run("ls", "--dir", str(zoo.dir)).stdout
    lines = out.splitlines()
    header = lines[0]
    rows = {ln.split()[0]: ln for ln in lines[1:] if ln.startswith((zoo.prefix, str(zoo.dir)))}
    assert set(rows) == {zoo.ring_name, f"{zoo.prefix}-q", f"{zoo.prefix}-a", f"{zoo.prefix}-s", zoo.file.name}

    def cell(name: str, column: str) -> str:
        """The cell under a left-aligned column header."""
        start = header.index(column)
        return rows[name][start:].split("  ")[0]

    ring = zoo.ring_name
    assert cell(ring, "KIND") == "Ring" and cell(ring, "TOPOLOGY") == "SPSC"
    assert cell(ring, "SHAPE") == "(480, 640, 3)" and cell(ring, "DTYPE") == "uint8"
    assert cell(ring, "P/C/O") == "1/0/1"  # we put; the child only holds a handle
    assert cell(ring, "STATE") == "in use"
    assert "1 (25%)" in rows[ring]  # fill: 1 of 4 items
    queue = f"{zoo.prefix}-q"
    assert cell(queue, "KIND") == "Queue" and cell(queue, "TOPOLOGY") == "MPMC" and "64.0K" in rows[queue]
    assert cell(f"{zoo.prefix}-a", "KIND") == "Array" and cell(f"{zoo.prefix}-a", "TOPOLOGY") == "-"
    assert cell(f"{zoo.prefix}-a", "P/C/O") == "0/0/1"
    assert cell(f"{zoo.prefix}-s", "SYNC") == "semaphore" and cell(f"{zoo.prefix}-s", "TOPOLOGY") == "MPSC"
    assert cell(zoo.file.name, "KIND") == "Ring" and cell(zoo.file.name, "DTYPE") == "float32"
    # Aligned: right-aligned columns end where their header ends.
    for column in ("CAPACITY", "FILL", "CREATOR", "SIZE"):
        end = header.index(column) + len(column)
        for line in rows.values():
            assert line[end - 1] != " " and line[end : end + 2] == "  ", (column, line)


def test_ls_json_is_machine_readable(zoo: Zoo) -> None:
    regions = {r["name"]: r for r in json.loads(run("ls", "--json", "--dir", str(zoo.dir)).stdout)}
    ring = regions[zoo.ring_name]
    assert ring["kind"] == "Ring" and ring["shape"] == [480, 640, 3] and ring["capacity"] == 4
    assert ring["fill"] == 1 and ring["fill_ratio"] == 0.25 and ring["abandoned"] is False
    assert (ring["producers"], ring["consumers"], ring["observers"], ring["dead"]) == (1, 0, 1, 0)
    assert {(e["role"], e["pid"], e["alive"]) for e in ring["endpoints"]} == {
        ("holder", os.getpid(), True),
        ("producer", os.getpid(), True),
        ("holder", zoo.observer_pid, True),
    }
    assert ring["creator_pid"] == os.getpid() and ring["creator_alive"] is True
    assert isinstance(ring["bytes"], int) and isinstance(ring["age_s"], float)
    queue = regions[f"{zoo.prefix}-q"]
    assert queue["capacity"] == 1 << 16 and queue["capacity_unit"] == "bytes" and queue["fill"] == 2
    assert regions[f"{zoo.prefix}-s"]["sync"] == "semaphore"
    assert regions[zoo.file.name]["backend"] == "file"


@pytest.mark.parametrize("which", ["ring", "queue", "array", "sem", "file"])
def test_stat_shows_header_words_endpoints_and_semaphores(zoo: Zoo, which: str) -> None:
    handle = getattr(zoo, which)
    text = run("stat", handle.name).stdout  # a file region by its path alone: no --backend
    info = json.loads(run("stat", handle.name, "--json").stdout)
    assert text.startswith(f"{info['kind']} {handle.name}")
    assert f"pid {os.getpid()} (alive)" in text and "header (immutable)" in text and "SLOT" in text
    header = info["header"]
    assert header["magic"] == "SHMRING\0" and header["version"] == L.VERSION
    assert header["total_size"] == info["bytes"] and header["creator_pid"] == os.getpid()
    if which == "queue":
        assert info["fill"] == 2 and header["maxsize"] == 0 and "maxsize" in text
    elif which == "array":
        assert info["words"]["writes"] == 0 and info["waiters"] == {"lock": 0} and "lock waiters" in text
    else:
        assert info["fill"] == 1 and info["waiters"] == {"consumer": 0, "producer": 0}
        assert info["words"]["head"] - info["words"]["tail"] == 1
    if which == "sem":
        sems = {s["name"].rsplit("-", 1)[1]: s["value"] for s in info["semaphores"]}
        assert sems.keys() == {"free", "full", "plock", "clock"}  # the side locks' parking places too
        assert (sems["free"], sems["full"]) == (9, 1)
        assert "semaphores" in text and "-free" in text
    else:
        assert info["semaphores"] == []


@pytest.mark.parametrize("which", ["ring", "queue", "array", "sem", "file"])
def test_stat_and_ls_report_the_statistics_the_handle_reports(zoo: Zoo, which: str) -> None:
    handle = getattr(zoo, which)
    info = json.loads(run("stat", handle.name, "--json").stdout)
    assert info["statistics"] == dataclasses.asdict(handle.statistics())
    text = run("stat", handle.name).stdout.split("statistics (since creation")[1]
    if which == "array":
        assert "writes: 0 write() block(s)" in text and "messages in" not in text
    else:
        stats = handle.statistics()
        assert f"messages in: {stats.messages_in}  ({stats.bytes_in} B" in text
        assert f"messages out: {stats.messages_out}  ({stats.bytes_out} B" in text
    listed = {r["name"]: r for r in json.loads(run("ls", "--json", "--dir", str(zoo.dir)).stdout)}
    assert listed[handle.name]["statistics"] == info["statistics"]


def test_stat_counts_holes_repairs_and_writes(prefix: str) -> None:
    ring = shmring.Ring(f"{prefix}-holes", capacity=8, multi_producer=True, multi_consumer=True)
    array = shmring.Array(f"{prefix}-writes", shape=(2,))
    try:

        def reserve_and_die() -> None:
            r = shmring.Ring.attach(ring.name)
            block = r.reserve()
            block.__enter__()  # claims a slot, then the child is killed holding it
            _kept.append((r, block))  # kept open: a handle collected here would close and settle the slot

        with in_child(reserve_and_die) as child:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        ring.put(5)
        assert ring.get(timeout=10) == 5  # past the dead producer's slot, repaired into a hole
        with array.write() as view:
            view[:] = 1
        stats = json.loads(run("stat", ring.name, "--json").stdout)["statistics"]
        assert (stats["messages_in"], stats["messages_out"], stats["holes"], stats["abandoned"]) == (1, 1, 1, 1)
        assert stats["reaped"] >= 1  # the dead producer's entry, freed by the repair
        assert "holes: 1  (positions published without an item)" in run("stat", ring.name).stdout
        assert json.loads(run("stat", array.name, "--json").stdout)["statistics"]["writes"] == 1
    finally:
        ring.close()
        array.close()


def test_stat_does_not_count_a_killed_sleeper_among_the_waiters(prefix: str) -> None:
    name = f"{prefix}-waiters"
    ring = shmring.Ring(name, capacity=4)
    try:

        def consume_forever() -> None:
            r = shmring.Ring.attach(name)
            threading.Thread(target=r.get, daemon=True).start()  # blocks: the ring is empty

        with in_child(consume_forever) as child:
            deadline = time.monotonic() + 10
            while cli.inspect(name)["waiters"]["consumer"] != 1:
                assert time.monotonic() < deadline, "the child never went to sleep in get()"
                time.sleep(0.01)
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            info = json.loads(run("stat", name, "--json").stdout)
            assert info["words"]["consumer_waiters_word"] & 0xFFFF == 1  # the dead sleeper is still counted there
            assert info["waiters"]["consumer"] == 0  # but stat does not show it
            assert info["dead"] == 1
    finally:
        ring.close()


def test_stat_watch_refreshes_with_rates(prefix: str) -> None:
    with shmring.Ring(f"{prefix}-watch", capacity=64, dtype=np.int64) as ring:
        proc = subprocess.Popen(
            [SHMRING, "stat", ring.name, "--watch", "0.5", "--count", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while proc.poll() is None:  # traffic while it watches
            ring.put(1)
            ring.get()
            time.sleep(0.001)
        out, err = proc.communicate()
    assert proc.returncode == 0 and "Traceback" not in err
    first, second = out.split("\n\n")  # not a terminal: snapshots one after the other
    assert first.startswith(f"Ring {ring.name}") and second.startswith(f"Ring {ring.name}")
    assert "(from the next refresh on)" in first
    rates = dict(ln.strip().split(": ") for ln in second.split("rates (per second)\n")[1].splitlines())
    assert float(rates["messages in"].removesuffix("/s")) > 10
    assert rates["bytes out"].endswith("/s")


def test_stat_watch_ends_when_the_region_goes_or_on_ctrl_c(prefix: str) -> None:
    ring = shmring.Ring(f"{prefix}-gone", capacity=4)
    watchers = [
        subprocess.Popen(
            [SHMRING, "stat", str(ring.name), "--watch", "0.1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for w in watchers:
        assert w.stdout is not None and w.stdout.readline().startswith("Ring")
    watchers[1].send_signal(signal.SIGINT)
    ring.close()  # the last handle: the name goes
    _, err = watchers[0].communicate(timeout=30)
    assert watchers[0].returncode == 1 and err.strip() == f"shmring stat: {ring.name}: removed"
    _, err = watchers[1].communicate(timeout=30)
    assert watchers[1].returncode == 0 and err == ""


def test_rm_refuses_what_is_not_a_shmring_region_unless_forced(prefix: str) -> None:
    foreign = SHM / f"{prefix}-foreign"
    foreign.write_bytes(b"not ours" * 1024)
    one_line_error(run("rm", foreign.name, rc=1), "rm", "not a shmring region", "--force")
    assert foreign.exists()
    run("rm", "--force", foreign.name)
    assert not foreign.exists()


def test_rm_removes_by_path_and_warns_about_live_users(prefix: str, tmp_path: Path) -> None:
    path = tmp_path / "frames.ring"
    ring = shmring.Ring(str(path), capacity=4, backend="file", sync="semaphore")
    sem_id = sem_id_of(path)
    try:
        assert shm_semaphores(sem_id)
        proc = run("rm", str(path))
        one_line_error(proc, "rm", "warning", f"pid {os.getpid()}")
        assert not path.exists() and not shm_semaphores(sem_id)
        ring.put(1)  # our mapping lives on
    finally:
        ring.close()


def test_rm_goes_on_after_a_missing_name(prefix: str) -> None:
    abandon(lambda: _kept.append(shmring.Ring(f"{prefix}-x", capacity=2, sync="semaphore")))
    sem_id = sem_id_of(SHM / f"{prefix}-x")
    proc = run("rm", f"{prefix}-missing", f"{prefix}-x", rc=1)
    one_line_error(proc, "rm", f"{prefix}-missing: no such segment")
    assert not (SHM / f"{prefix}-x").exists() and not shm_semaphores(sem_id)


def test_rm_half_created_needs_force_unless_its_creator_is_dead(prefix: str) -> None:
    dead, young = SHM / f"{prefix}-dead", SHM / f"{prefix}-young"
    write_half_created(dead, dead_pid())
    write_half_created(young, os.getpid(), own_start_time())  # a live creator: being created
    one_line_error(run("rm", young.name, dead.name, rc=1), "rm", "half-created", "--force")
    assert young.exists() and not dead.exists()
    run("rm", "--force", young.name)
    assert not young.exists()


def test_gc_collects_the_abandoned_and_the_half_created_only(prefix: str, tmp_path: Path) -> None:
    a = f"{prefix}-a"  # what --match selects
    abandon(lambda: _kept.append(shmring.Ring(f"{a}-ring", capacity=4, sync="semaphore")))
    abandon(lambda: _kept.append(shmring.Ring(f"{prefix}-b-ring", capacity=4)))  # not matched
    abandon(lambda: _kept.append(shmring.Ring(str(tmp_path / f"{a}-file.ring"), capacity=4, backend="file")))
    sem_id = sem_id_of(SHM / f"{a}-ring")
    write_half_created(SHM / f"{a}-half", dead_pid())
    (SHM / f"{a}-stale").write_bytes(bytes(2 * L.PAGE))  # zeros, no endpoint: only with --force
    (SHM / f"{a}-tiny").write_bytes(b"")  # not a shmring region: never touched
    live = shmring.Ring(f"{a}-live", capacity=4)
    gc = ["gc", "--match", f"{a}*", "--dir", str(tmp_path)]
    env = {"SHMRING_HALF_CREATED_GRACE_S": "0"}
    try:
        out = run(*gc, "--dry-run", env=env).stdout
        assert f"would remove {a}-ring (abandoned" in out and "4 semaphore(s)" in out
        assert f"would remove {a}-half (half-created" in out
        assert f"would remove {tmp_path}/{a}-file.ring" in out
        assert f"leaving {a}-stale" in out and "--force to remove" in out
        assert "live" not in out and "tiny" not in out and "-b-ring" not in out
        assert (SHM / f"{a}-ring").exists() and shm_semaphores(sem_id)

        out = run(*gc, env=env).stdout
        assert out.splitlines()[-1].startswith("gc: removed 2 abandoned region(s), 1 half-created region(s)")
        for gone in (SHM / f"{a}-ring", SHM / f"{a}-half", tmp_path / f"{a}-file.ring"):
            assert not gone.exists(), gone
        assert not shm_semaphores(sem_id)
        for kept in (f"{a}-stale", f"{a}-tiny", f"{a}-live", f"{prefix}-b-ring"):
            assert (SHM / kept).exists(), kept

        run(*gc, "--force", env=env)
        assert not (SHM / f"{a}-stale").exists()
        assert (SHM / f"{a}-tiny").exists() and (SHM / f"{a}-live").exists()
    finally:
        live.close()


def test_ls_marks_abandoned_and_half_created_regions(prefix: str) -> None:
    abandon(lambda: _kept.append(shmring.Ring(f"{prefix}-ab", capacity=4)))
    write_half_created(SHM / f"{prefix}-half", dead_pid())
    out = run("ls").stdout
    rows = {ln.split()[0]: ln for ln in out.splitlines()}
    assert rows[f"{prefix}-ab"].endswith("abandoned") and "(+1 dead)" in rows[f"{prefix}-ab"]
    assert rows[f"{prefix}-half"].endswith("half-created (creator dead)")
    assert "* creator no longer running" in out


# -- bad input: one line on stderr, never a traceback --------------------------------------
def test_bad_input_gets_one_line_and_a_status(prefix: str, tmp_path: Path) -> None:
    not_ours = tmp_path / "notes.txt"
    not_ours.write_text("hello\n" * 1000)
    old = tmp_path / "old.ring"
    header = bytearray(2 * L.PAGE)
    struct.pack_into("<8sI", header, 0, L.MAGIC, 1)
    old.write_bytes(header)
    cases: list[tuple[list[str], int, list[str]]] = [
        (["stat", f"{prefix}-nothing"], 1, ["no such segment in /dev/shm"]),
        (["stat", str(tmp_path / "nothing")], 1, ["no such file"]),
        (["stat", str(not_ours)], 1, ["not a shmring region"]),
        (["stat", str(old)], 1, ["format version 1"]),
        (["stat", str(tmp_path)], 1, ["is a directory"]),
        (["rm", str(tmp_path)], 1, ["is a directory"]),
        (["ls", "--dir", str(tmp_path / "nowhere")], 1, ["no such directory"]),
        (["gc", "--dir", str(not_ours)], 1, ["not a directory"]),
        (["stat", "a", "--backend", "shm", "--watch", "0"], 2, ["positive"]),
        (["ls", "--bogus"], 2, ["unrecognized arguments"]),
    ]
    if os.geteuid() == 0:
        denied = "/proc/sys/vm/compact_memory"  # write-only, even for root
    else:
        denied = str(tmp_path / "denied")
        Path(denied).write_bytes(bytes(L.PAGE))
        os.chmod(denied, 0)
    if os.path.exists(denied):
        cases.append((["stat", denied], 1, ["permission denied"]))
    for args, status, fragments in cases:
        proc = run(*args, rc=status)
        if status == 1:
            one_line_error(proc, args[0], *fragments)
        else:
            assert proc.stderr.strip().splitlines()[-1].startswith("shmring"), proc.stderr
            assert all(f in proc.stderr for f in fragments), proc.stderr
    assert not_ours.read_text() == "hello\n" * 1000


# -- help and the empty listing (in-process: no region needed) ---------------------------
def test_every_subcommand_has_a_description_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("ls", "stat", "rm", "gc"):
        with pytest.raises(SystemExit) as exit_:
            cli.main([command, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and f"shmring {command}" in text.split("examples:")[1]
    with pytest.raises(SystemExit):
        cli.main(["ls", "--help"])
    assert "ipcs" in capsys.readouterr().out


def test_ls_says_when_there_is_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("shmring._inspect.SHM_DIR", str(tmp_path))
    assert cli.main(["ls"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no shmring regions in") and "ipcs" in out and "/dev/shm" in out
