"""Shared memory between the frontend and one worker: the arena, its extents, their stamps.

Large request values and response bodies cross between the frontend and a worker through one
shared-memory *arena* per worker instead of the socket; the frame then carries a descriptor.

Mechanism: the arena is a ``memfd`` (Linux ``memfd_create``): it has no name, so nothing ever
appears in ``/dev/shm`` and nothing can be left behind there, whoever dies. The frontend
creates it, seals its size (``F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL``: handler code in
the worker cannot truncate it and make the frontend's reads fault), maps it (through libc, see
``_SharedMap``), sends the descriptor to the worker over the unix socket (``SCM_RIGHTS``) and
closes its own descriptor: from then on the memory lives exactly as long as the two mappings.
The frontend unmaps when the worker's connection ends (exit, ``SIGKILL``, stop); the worker's
mapping ends with its process; a killed frontend takes its worker with it
(``PR_SET_PDEATHSIG``). No other process can open it: there is no name, and no descriptor is
left in either process's ``/proc/<pid>/fd``.

Ownership is the frontend's alone: it allocates an *extent* per batch (first fit, 64-byte
aligned), writes a 64-byte stamp at its start (generation, capacity), writes the large request
values into it and reserves the rest as the batch's answer region; the extent is freed (stamp
generation 0) only when the worker's answer for that batch arrived, or when the worker is gone.
Generations only grow, so a descriptor of a freed or reused extent never matches its stamp.

Failure modes (worker side, ``ShmMapping``): a descriptor the worker cannot resolve raises a
``SharedMemoryError`` subclass naming why: ``ShmMissing`` (no arena attached, or another one),
``ShmTooSmall`` (the range does not fit the arena or its extent), ``ShmStale`` (the extent was
freed or reused: generation mismatch). The worker answers that request alone with a 500.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import mmap
import os
import secrets
import struct
from dataclasses import dataclass
from typing import Final

from torchwick.server.errors import InternalError

#: Stamp at the start of every extent: generation (0 = free) and data capacity in bytes.
STAMP: Final = struct.Struct("<QQ")
#: Bytes reserved for the stamp; keeps each extent's data 64-byte aligned (a cache line).
STAMP_SIZE: Final = 64
ALIGN: Final = 64


class SharedMemoryError(InternalError):
    """A shared-memory descriptor could not be resolved (answered 500 for that request)."""


class ShmMissing(SharedMemoryError):
    """The descriptor names an arena this process has not attached (or none is attached)."""


class ShmTooSmall(SharedMemoryError):
    """The descriptor's range does not fit inside the arena or inside its extent."""


class ShmStale(SharedMemoryError):
    """The descriptor's extent was freed or reused since (its generation no longer matches)."""


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True, slots=True)
class Extent:
    """One allocated range of the arena: ``offset`` of its stamp, ``capacity`` data bytes after
    the stamp (``data`` is where they start), and the ``generation`` written in the stamp."""

    offset: int
    capacity: int
    generation: int

    @property
    def data(self) -> int:
        return self.offset + STAMP_SIZE

    @property
    def end(self) -> int:
        return self.data + self.capacity


class _SharedMap:
    """A ``MAP_SHARED`` read-write mapping of a memfd, made through libc.

    Not ``mmap.mmap``: CPython's mmap keeps a duplicate of the descriptor open for as long as
    the map lives, and any process of the same user can open a descriptor through
    ``/proc/<pid>/fd`` (another model's worker included). A libc mapping keeps no descriptor.
    ``close`` unmaps: only call it when no view of ``view`` is left (the frontend never hands
    views out; the worker never unmaps, its mapping ends with the process).
    """

    def __init__(self, fd: int, size: int) -> None:
        libc = _libc()
        addr = libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == _MAP_FAILED:
            errno = ctypes.get_errno()
            raise OSError(errno, f"mmap of the shared-memory arena failed: {os.strerror(errno)}")
        self._addr: int | None = addr
        self._size = size
        self.view = memoryview((ctypes.c_ubyte * size).from_address(addr)).cast("B")

    def close(self) -> None:
        addr, self._addr = self._addr, None
        if addr is not None:
            self.view.release()
            _libc().munmap(addr, self._size)


_MAP_FAILED: Final = ctypes.c_void_p(-1).value
_LIBC: list[ctypes.CDLL] = []


def _libc() -> ctypes.CDLL:
    if not _LIBC:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.munmap.restype = ctypes.c_int
        _LIBC.append(libc)
    return _LIBC[0]


def create_memfd(size: int, name: str = "torchwick-ipc") -> int:
    """A sealed, close-on-exec memfd of ``size`` bytes (``OSError`` when the kernel refuses)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        fcntl.fcntl(
            fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
        )
    except OSError:
        os.close(fd)
        raise
    return fd


class ShmArena:
    """The frontend's side of one worker's arena: allocation, stamps, reads and writes.

    Not thread-safe: used from the event loop only. ``fd`` is the memfd until ``close_fd()``
    (call it once the worker has its copy). ``close()`` unmaps; it is idempotent.
    """

    def __init__(self, size: int) -> None:
        if size < STAMP_SIZE + ALIGN:
            raise ValueError(f"a shared-memory arena needs at least {STAMP_SIZE + ALIGN} bytes")
        self.size = size
        #: Random per arena: a descriptor meant for another arena is recognised as such.
        self.arena_id = secrets.randbits(63)
        self.fd: int | None = create_memfd(size)
        try:
            self._map: _SharedMap | None = _SharedMap(self.fd, size)
        except OSError:
            self.close_fd()
            raise
        self._generation = 0
        #: Live extents, sorted by offset.
        self._live: list[Extent] = []

    @property
    def closed(self) -> bool:
        return self._map is None

    @property
    def live(self) -> tuple[Extent, ...]:
        """The extents allocated now (in offset order)."""
        return tuple(self._live)

    def close_fd(self) -> None:
        """Close the frontend's memfd descriptor; the mapping keeps the memory."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def allocate(self, capacity: int) -> Extent | None:
        """A new extent with at least ``capacity`` data bytes, or ``None`` when none fits."""
        if self._map is None or capacity < 0:
            return None
        need = STAMP_SIZE + _align(capacity)
        start = 0
        index = len(self._live)
        for position, used in enumerate(self._live):
            if used.offset - start >= need:
                index = position
                break
            start = used.end
        if start + need > self.size:
            return None
        self._generation += 1
        extent = Extent(start, need - STAMP_SIZE, self._generation)
        STAMP.pack_into(self._map.view, start, extent.generation, extent.capacity)
        self._live.insert(index, extent)
        return extent

    def free(self, extent: Extent) -> None:
        """Mark ``extent`` free (stamp generation 0) and forget it; unknown extents are ignored."""
        with contextlib.suppress(ValueError):
            self._live.remove(extent)
            if self._map is not None:
                STAMP.pack_into(self._map.view, extent.offset, 0, 0)

    def write(self, at: int, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into the arena at byte ``at`` (the caller checked it fits its extent)."""
        assert self._map is not None
        self._map.view[at : at + len(data)] = data

    def read(self, at: int, size: int) -> bytes:
        """A copy of ``size`` bytes at ``at``: the caller may free the extent afterwards."""
        assert self._map is not None
        return self._map.view[at : at + size].tobytes()

    def close(self) -> None:
        """Unmap the arena (and close the memfd if still open); later calls do nothing."""
        self.close_fd()
        shared, self._map = self._map, None
        self._live.clear()
        if shared is not None:
            shared.close()


class ShmMapping:
    """The worker's side of an arena: resolves descriptors into views, writes answers.

    ``attach`` maps the memfd the frontend sent and closes the descriptor (the mapping keeps
    the memory). Views handed out are read-only and valid until the worker has answered the
    batch they came with: the frontend frees (and may reuse) the extent right after.
    """

    def __init__(self, fd: int, size: int, arena_id: int) -> None:
        try:
            actual = os.fstat(fd).st_size
            if actual < size:
                raise ShmTooSmall(
                    f"shared-memory arena is {actual} bytes, the frontend announced {size}"
                )
            self._map = _SharedMap(fd, size)
        finally:
            os.close(fd)
        self.size = size
        self.arena_id = arena_id
        self._view = self._map.view.toreadonly()

    def check(self, arena_id: int, offset: int, generation: int, at: int, size: int) -> None:
        """Raise the ``SharedMemoryError`` that makes ``[at, at+size)`` of that extent unusable."""
        if arena_id != self.arena_id:
            raise ShmMissing(f"shared-memory arena {arena_id:#x} is not attached in this worker")
        if offset < 0 or offset + STAMP_SIZE > self.size or at < 0 or size < 0:
            raise ShmTooSmall(
                f"shared-memory extent at {offset} lies outside the {self.size}-byte arena"
            )
        stamped, capacity = STAMP.unpack_from(self._view, offset)
        if stamped != generation:
            raise ShmStale(
                f"shared-memory extent at {offset} was freed or reused "
                f"(generation {stamped}, expected {generation})"
            )
        data = offset + STAMP_SIZE
        if at < data or at + size > min(data + capacity, self.size):
            raise ShmTooSmall(
                f"{size} bytes at {at} do not fit the shared-memory extent at {offset} "
                f"({capacity} bytes)"
            )

    def view(self, arena_id: int, offset: int, generation: int, at: int, size: int) -> memoryview:
        """A read-only view of ``size`` bytes at ``at`` (``SharedMemoryError`` when unusable)."""
        self.check(arena_id, offset, generation, at, size)
        return self._view[at : at + size]

    def write(self, at: int, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into the arena at ``at`` (the caller checked its answer region)."""
        self._map.view[at : at + len(data)] = data

    def close(self) -> None:
        """Unmap (tests; a worker keeps its mapping until it exits, as handlers may still hold
        views). Raises ``BufferError`` while a view handed out is alive."""
        self._view.release()
        self._map.close()


def missing(arena_id: int) -> ShmMissing:
    """The error for a descriptor that arrives while no arena is attached."""
    return ShmMissing(f"shared-memory arena {arena_id:#x} is not attached in this worker")
