"""The frontend's shared-memory lane to one worker: when to use it, and who holds what.

A ``ShmLane`` wraps one worker's ``ShmArena`` (see ``shm``). For each PREDICT/DESCRIBE batch it
allocates one extent: the request values of at least ``threshold`` bytes first, then an answer
region the worker may fill with response bodies of at least ``threshold`` bytes. The extent is
*held* by that batch until the worker's answer frame for it is decoded (``settle``), whether or
not the caller still waits for it: a cancelled or timed-out batch keeps its memory until the
worker is done with it, so the worker never reads an extent that is being reused. When the
worker is gone, ``close`` unmaps everything.

Sizing: values plus answer region take at most half the arena (the region at most
``batch x max_response_size``), so two batches fit side by side; when the arena is full the
batch falls back to the socket (values and answers alike), never to an error. The lane is
``active`` only after the worker confirmed that it mapped the arena (``SHM_ATTACH_RESULT``);
before that, and after a failed attach, everything goes over the socket.
"""

from __future__ import annotations

import logging
import os
import socket
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from .ipc import Buffers, Kind, _frame
from .shm import STAMP_SIZE, Extent, ShmArena

logger = logging.getLogger(__name__)

#: What the frontend tells the worker about the arena in the SHM_ATTACH frame header.
AttachHeader = tuple[int, int]


@dataclass(frozen=True, slots=True)
class ShmSettings:
    """A version's shared-memory settings (``LoadSpec.shm_threshold``/``shm_size``): values
    and answers of at least ``threshold`` bytes use an arena of ``size`` bytes per worker;
    ``threshold`` 0 (or a size of 0) turns the lane off."""

    threshold: int
    size: int
    max_response_size: int

    @property
    def enabled(self) -> bool:
        return self.threshold > 0 and self.size > 0


@dataclass(slots=True)
class ShmCounters:
    """What went through the lane (tests and benchmarks read these)."""

    values_sent: int = 0
    bytes_sent: int = 0
    bodies_received: int = 0
    bytes_received: int = 0
    fallbacks: int = 0


@dataclass(frozen=True, slots=True)
class Reservation:
    """One batch's extent: ``out_at``/``out_size`` is its answer region (size 0: none)."""

    extent: Extent
    out_at: int
    out_size: int


class ShmLane:
    """See the module docstring. Used from the event loop only."""

    def __init__(self, settings: ShmSettings) -> None:
        self.settings = settings
        self.threshold = settings.threshold
        self.arena: ShmArena | None = None
        self.active = False
        self.counters = ShmCounters()
        #: Batches sent with an extent, oldest first: (batch_id, reservation).
        self._held: deque[tuple[int, Reservation]] = deque()

    # ---- attach ------------------------------------------------------------------------------

    def open(self) -> ShmArena:
        """Create the arena (``OSError`` when the kernel refuses a memfd)."""
        self.arena = ShmArena(self.settings.size)
        return self.arena

    def attach_frame(self) -> tuple[Buffers, int]:
        """The SHM_ATTACH frame and the descriptor to pass with it."""
        arena = self.arena
        assert arena is not None and arena.fd is not None
        header: AttachHeader = (arena.arena_id, arena.size)
        return _frame(Kind.SHM_ATTACH, header), arena.fd

    def attached(self, status: int, message: str) -> None:
        """The worker's SHM_ATTACH_RESULT: 200 activates the lane, anything else closes it."""
        if status == 200 and self.arena is not None and not self.arena.closed:
            self.active = True
            return
        logger.warning("shared memory not used for this worker: %s", message)
        self.close()

    # ---- per batch ---------------------------------------------------------------------------

    def reserve(self, batch_id: int, count: int, inputs: int) -> Reservation | None:
        """An extent for a batch of ``count`` requests with ``inputs`` bytes of large values,
        held until ``settle``; ``None`` (socket only) when the lane is off or the arena full."""
        arena = self.arena
        if not self.active or arena is None:
            return None
        # Inputs plus answer region take at most half the arena: two batches fit side by side.
        cap = min(arena.size // 2 - STAMP_SIZE - inputs, count * self.settings.max_response_size)
        out = cap if cap >= self.threshold else 0
        extent = arena.allocate(inputs + out) if inputs + out else None
        if extent is None and out and inputs:
            out = 0
            extent = arena.allocate(inputs)
        if extent is None:
            if inputs:
                self.counters.fallbacks += 1
            return None
        reservation = Reservation(extent, extent.data + inputs, extent.capacity - inputs)
        self._held.append((batch_id, reservation))
        return reservation

    def write(self, at: int, value: bytes | bytearray | memoryview) -> None:
        """Copy one request value into its reservation."""
        assert self.arena is not None
        self.arena.write(at, value)
        self.counters.values_sent += 1
        self.counters.bytes_sent += len(value)

    def reservation(self, batch_id: int) -> Reservation | None:
        """The extent still held for ``batch_id``, if any."""
        for held_id, reservation in self._held:
            if held_id == batch_id:
                return reservation
        return None

    def read_body(self, batch_id: int, at: int, size: int) -> bytes | None:
        """A copy of an answer body the worker wrote for ``batch_id``; ``None`` when the
        descriptor does not lie inside that batch's answer region (a broken worker)."""
        reservation = self.reservation(batch_id)
        if reservation is None or self.arena is None or size < 0:
            return None
        if at < reservation.out_at or at + size > reservation.out_at + reservation.out_size:
            return None
        self.counters.bodies_received += 1
        self.counters.bytes_received += size
        return self.arena.read(at, size)

    def settle(self, batch_id: int) -> None:
        """The answer for ``batch_id`` was decoded: free its extent and any older one (the
        worker answers in order, so an older batch was answered, or skipped, before)."""
        while self._held and self._held[0][0] <= batch_id:
            self._free(self._held.popleft()[1])

    def settle_oldest(self) -> None:
        """An answer frame was skipped unread (oversize): free the oldest batch's extent."""
        if self._held:
            self._free(self._held.popleft()[1])

    def _free(self, reservation: Reservation) -> None:
        if self.arena is not None:
            self.arena.free(reservation.extent)

    def close(self) -> None:
        """The worker is gone (or never attached): unmap the arena; idempotent."""
        self.active = False
        self._held.clear()
        if self.arena is not None:
            self.arena.close()


def send_with_fd(transport: Any, buffers: Buffers, fd: int) -> None:
    """Write one frame on ``transport``'s socket with ``fd`` attached (``SCM_RIGHTS``).

    Only safe while the transport has nothing buffered (the frame must not overtake earlier
    bytes): raises ``BlockingIOError`` when it has, or when the kernel does not take the whole
    frame at once (nothing was sent then; the caller stays on the socket path).
    """
    if transport.get_write_buffer_size():
        raise BlockingIOError("the worker connection has unsent bytes")
    raw = transport.get_extra_info("socket")
    if raw is None:
        raise BlockingIOError("the worker connection exposes no socket")
    data = b"".join(bytes(b) for b in buffers)
    # A second socket object on a dup of the connection's descriptor: asyncio's and uvloop's
    # socket wrappers do not offer sendmsg. Same open file, so same stream and same order.
    dup = socket.socket(fileno=os.dup(raw.fileno()))
    try:
        sent = dup.sendmsg(
            [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array("i", [fd]).tobytes())]
        )
    finally:
        dup.close()
    if sent != len(data):
        # Part of a frame is on the wire: the stream cannot be trusted any more.
        raise ConnectionError(f"sent {sent} of {len(data)} bytes of the SHM_ATTACH frame")


#: Bytes of each extent that are not usable data (the stamp); for sizing in tests and docs.
EXTENT_OVERHEAD: Final = STAMP_SIZE
