"""The header: its byte table, and attach/operations on corrupt headers."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap

import numpy as np
import posix_ipc
import pytest

import shmring
from shmring import _layout as L


def test_moving_parts_each_own_a_128_byte_line() -> None:
    lines = {
        "producer": {L.HEAD_OFF, L.CACHED_TAIL_OFF},
        "consumer": {L.TAIL_OFF, L.CACHED_HEAD_OFF},
        "waiters": {L.CONSUMER_WAITERS_OFF, L.PRODUCER_WAITERS_OFF},
    }
    owners = {name: {off // L.LINE for off in offs} for name, offs in lines.items()}
    assert all(len(v) == 1 for v in owners.values())
    assert len({next(iter(v)) for v in owners.values()}) == 3
    assert L.HEAD_OFF >= L.IMMUTABLE_END and L.ENDPOINTS_END <= L.DATA_OFFSET == 4096


def test_header_encodes_and_decodes(name: str) -> None:
    with shmring.Ring(name, capacity=7, shape=(3, 5), dtype="<u2") as r:
        assert r._region is not None and r._region.mapping is not None
        geo = L.read_header(r._region.mapping, r._region.size, L.KIND_RING)
        assert (geo.capacity, geo.shape, geo.dtype, geo.slot_size) == (7, (3, 5), np.dtype("<u2"), 30)
        assert bytes(r._region.mapping[:8]) == L.MAGIC


def _raw_segment(name: str, content: bytes, size: int) -> None:
    shm = posix_ipc.SharedMemory("/" + name, posix_ipc.O_CREX, size=size)
    import mmap

    m = mmap.mmap(shm.fd, size)
    m[: len(content)] = content
    m.close()
    shm.close_fd()


def test_attach_to_a_foreign_segment_is_a_layout_error(name: str) -> None:
    _raw_segment(name, b"hello, not a ring" * 10, 8192)
    try:
        with pytest.raises(shmring.LayoutError, match="magic"):
            shmring.Ring.attach(name)
    finally:
        posix_ipc.unlink_shared_memory("/" + name)


def test_attach_to_a_tiny_segment_is_a_layout_error(name: str) -> None:
    _raw_segment(name, b"SHMRING\0", 100)
    try:
        with pytest.raises(shmring.LayoutError):
            shmring.Ring.attach(name)
    finally:
        posix_ipc.unlink_shared_memory("/" + name)


def _rewrite(r: shmring.Ring, off: int, fmt: str, value: int, fix_checksum: bool = True) -> None:
    assert r._region is not None and r._region.mapping is not None
    m = r._region.mapping
    struct.pack_into(fmt, m, off, value)
    if fix_checksum:
        struct.pack_into("<Q", m, L.CHECKSUM_OFF, L.checksum(m))


def test_another_format_version_is_refused_by_name(name: str) -> None:
    with shmring.Ring(name, capacity=2) as r:
        _rewrite(r, L.VERSION_OFF, "<I", 99)
        with pytest.raises(shmring.LayoutError, match="version 99"):
            shmring.Ring.attach(name)


def test_a_flipped_immutable_byte_fails_the_checksum(name: str) -> None:
    with shmring.Ring(name, capacity=2) as r:
        _rewrite(r, L.CAPACITY_OFF, "<Q", 3, fix_checksum=False)
        with pytest.raises(shmring.LayoutError, match="checksum"):
            shmring.Ring.attach(name)


def test_geometry_larger_than_the_segment_is_refused(name: str) -> None:
    with shmring.Ring(name, capacity=2, shape=(8,)) as r:
        _rewrite(r, L.CAPACITY_OFF, "<Q", 10**9)
        with pytest.raises(shmring.LayoutError):
            shmring.Ring.attach(name)


def test_corrupt_indices_raise_instead_of_reading_out_of_bounds(name: str) -> None:
    with shmring.Ring(name, capacity=4, shape=(2,)) as r:
        r.put([1, 2])
        _rewrite(r, L.HEAD_OFF, "<Q", 10**6, fix_checksum=False)
        _rewrite(r, L.CACHED_HEAD_OFF, "<Q", 10**6, fix_checksum=False)
        with pytest.raises(shmring.LayoutError, match="corrupt"):
            r.get()
        _rewrite(r, L.HEAD_OFF, "<Q", 1, fix_checksum=False)
        np.testing.assert_array_equal(r.get(), [1, 2])  # mended header: usable again


SWEEP = textwrap.dedent(
    """
    import random, struct, sys
    import numpy as np
    import shmring
    from shmring import _layout as L
    name, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(start)
    crashes = 0
    for off in range(start, stop):
        for value in (0xFF, 0x00, rng.randrange(256)):
            with shmring.Ring(name, capacity=3, shape=(4,), dtype=np.int16) as r:
                r.put([1, 2, 3, 4])
                m = r._region.mapping
                m[off] = value
                if off < L.CHECKSUM_OFF and value % 2:  # half the time, pass the checksum
                    struct.pack_into("<Q", m, L.CHECKSUM_OFF, L.checksum(m))
                try:
                    with shmring.Ring.attach(name) as a:
                        for op in (lambda: a.get_many(3, timeout=0), lambda: a.put([5, 6, 7, 8], timeout=0),
                                   a.qsize, a.endpoints):
                            try:
                                op()
                            except Exception:
                                pass
                except Exception:
                    pass
                for op in (lambda: r.get(timeout=0), lambda: r.put([1, 1, 1, 1], timeout=0),
                           lambda: r.borrow_many(2, timeout=0).__enter__()):
                    try:
                        op()
                    except Exception:
                        pass
    print("survived", stop - start)
    """
)


def sweep(script: str, name: str, start: int, stop: int) -> None:
    """Run a corruption sweep over bytes [start, stop) in a child interpreter:
    it must exit normally having survived every byte."""
    proc = subprocess.run(
        [sys.executable, "-c", script, name, str(start), str(stop)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"survived {stop - start}" in proc.stdout


@pytest.mark.parametrize("chunk", range(4))
def test_corrupting_any_header_byte_raises_and_never_crashes(name: str, chunk: int) -> None:
    """Every byte of the header page, set to 0x00, 0xFF and a random value:
    attach and every operation either work or raise; the interpreter lives."""
    step = L.HEADER_SIZE // 4
    sweep(SWEEP, name, chunk * step, (chunk + 1) * step)


QUEUE_SWEEP = textwrap.dedent(
    """
    import random, struct, sys
    import numpy as np
    import shmring
    from shmring import _layout as L
    name, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(start)
    for off in range(start, stop):
        for value in (0xFF, 0x00, rng.randrange(256)):
            with shmring.Queue(3, name=name, capacity=1024) as q:
                q.put(b"x" * 100)
                q.put({"a": np.arange(20)})
                m = q._region.mapping
                m[off] = value
                if off < L.CHECKSUM_OFF and value % 2:  # half the time, pass the checksum
                    struct.pack_into("<Q", m, L.CHECKSUM_OFF, L.checksum(m))
                try:
                    with shmring.Queue.attach(name) as a:
                        for op in (lambda: a.get_many(3, timeout=0), lambda: a.put(b"y" * 200, timeout=0),
                                   a.qsize, a.full, a.endpoints):
                            try:
                                op()
                            except Exception:
                                pass
                except Exception:
                    pass
                for op in (lambda: q.get(timeout=0), lambda: q.put({"b": np.ones(30)}, timeout=0),
                           lambda: q.borrow(timeout=0).__enter__(), lambda: q.put_many([b"z"] * 4, timeout=0)):
                    try:
                        op()
                    except Exception:
                        pass
    print("survived", stop - start)
    """
)


@pytest.mark.parametrize("chunk", range(5))
def test_corrupting_any_byte_of_a_queue_raises_and_never_crashes(name: str, chunk: int) -> None:
    """A Queue's header page (4 chunks), then its sequence and record words
    and its first records' bytes (the last chunk), each byte set to 0x00,
    0xFF and a random value: every operation works or raises."""
    geo = shmring.queue._geometry(1024, "lockfree")
    step = L.HEADER_SIZE // 4
    spans = [(c * step, (c + 1) * step) for c in range(4)]
    spans.append((L.SEQ_OFFSET, L.SEQ_OFFSET + geo.capacity * 16))  # sequence and record words
    sweep(QUEUE_SWEEP, name, *spans[chunk])
    if chunk == 4:  # and the two records' first bytes: headers, part tables, pickle stream
        sweep(QUEUE_SWEEP, name, geo.data_offset, geo.data_offset + 256)
