"""Moving frames over a stream socket: an incremental decoder for the frontend's asyncio
protocol, and blocking send/receive for the worker process.

Both ends share one rule for broken streams: bytes that are not a frame raise ``ProtocolError``
and the connection is dropped; a frame above the receiver's payload limit is skipped and
reported, so the stream stays usable.
"""

from __future__ import annotations

import array
import io
import os
import socket
import threading
from collections.abc import Callable

from .ipc import (
    PREFIX_SIZE,
    SMALL_FRAME,
    Buffers,
    FrameTooLargeError,
    ProtocolError,
    parse_prefix,
)

FrameHandler = Callable[[int, memoryview, memoryview], None]
OversizeHandler = Callable[[FrameTooLargeError], None]

#: sendmsg takes at most IOV_MAX (1024 on Linux) buffers per call.
_MAX_IOV = 512


class FrameDecoder:
    """Reassembles frames from a byte stream into one reusable buffer, without extra copies.

    Use ``get_buffer()``/``feed(n)`` as an ``asyncio.BufferedProtocol`` does. ``on_frame(kind,
    header, payload)`` is called synchronously for each complete frame; the views are only valid
    during the call. A payload above ``max_payload`` is skipped as it streams in (never buffered)
    and reported once, when its prefix arrives, through ``on_oversize``; the stream stays in sync.
    Stream corruption raises ``ProtocolError`` from ``feed``.
    """

    _INITIAL = 256 * 1024
    _SHRINK_ABOVE = 8 * 1024 * 1024

    def __init__(
        self, on_frame: FrameHandler, on_oversize: OversizeHandler, *, max_payload: int
    ) -> None:
        self._on_frame = on_frame
        self._on_oversize = on_oversize
        self._max_payload = max_payload
        self._buf = bytearray(self._INITIAL)
        self._start = 0
        self._end = 0
        self._need = PREFIX_SIZE  # bytes the frame at _start needs in total
        self._skip = 0  # bytes of an oversize frame still to discard

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Writable space for the next read: at least what the pending frame still lacks."""
        want = max(self._need - (self._end - self._start), self._INITIAL // 4)
        if len(self._buf) - self._end < want:
            self._make_room(want)
        return memoryview(self._buf)[self._end :]

    def _make_room(self, want: int) -> None:
        live = self._end - self._start
        if live + want <= len(self._buf):
            # Same-size slice assignment moves bytes in place; it is allowed while the event
            # loop still holds a view of this buffer (resizing would not be).
            self._buf[0:live] = self._buf[self._start : self._end]
        else:
            grown = bytearray(max(live + want, 2 * len(self._buf)))
            grown[0:live] = self._buf[self._start : self._end]
            self._buf = grown
        self._start, self._end = 0, live

    def feed(self, nbytes: int) -> None:
        """Account for ``nbytes`` written into the last buffer and dispatch complete frames."""
        self._end += nbytes
        buf = self._buf
        while True:
            if self._skip:
                dropped = min(self._skip, self._end - self._start)
                self._skip -= dropped
                self._start += dropped
                if self._skip:
                    break
            available = self._end - self._start
            if available < PREFIX_SIZE:
                self._need = PREFIX_SIZE
                break
            kind, header_len, payload_len = parse_prefix(
                buf[self._start : self._start + PREFIX_SIZE]
            )
            if payload_len > self._max_payload:
                self._start += PREFIX_SIZE
                self._skip = header_len + payload_len
                self._on_oversize(FrameTooLargeError(kind, payload_len, self._max_payload))
                continue
            total = PREFIX_SIZE + header_len + payload_len
            if available < total:
                self._need = total
                break
            head_at = self._start + PREFIX_SIZE
            body_at = head_at + header_len
            view = memoryview(buf)
            self._start += total
            self._on_frame(kind, view[head_at:body_at], view[body_at : body_at + payload_len])
        self._settle()

    def _settle(self) -> None:
        if self._start == self._end:
            self._start = self._end = 0
            if len(self._buf) > self._SHRINK_ABOVE:
                self._buf = bytearray(self._INITIAL)


class BlockingFrameSocket:
    """The worker's end of the connection: blocking reads, and sends safe across threads.

    ``send`` may be called from handler threads (streaming ``emit_intermediate``) while the main
    thread answers; a lock keeps frames whole. ``recv`` is only called from the main thread.
    """

    def __init__(self, sock: socket.socket, *, max_payload: int = 1 << 40) -> None:
        self._sock = sock
        self._raw = _FdSocketIO(sock)
        self._reader = io.BufferedReader(self._raw, 256 * 1024)
        self._lock = threading.Lock()
        self._max_payload = max_payload

    def recv(self) -> tuple[int, bytes, bytes] | None:
        """The next ``(kind, header, payload)``; ``None`` on a clean end of stream.

        Raises ``ProtocolError`` on a stream cut inside a frame or a bad prefix, and
        ``FrameTooLargeError`` (after skipping the frame) when its payload exceeds the limit.
        """
        prefix: bytes = self._reader.read(PREFIX_SIZE)
        if not prefix:
            return None
        if len(prefix) < PREFIX_SIZE:
            raise ProtocolError("stream ended inside a frame prefix")
        kind, header_len, payload_len = parse_prefix(prefix)
        if payload_len > self._max_payload:
            self._discard(header_len + payload_len)
            raise FrameTooLargeError(kind, payload_len, self._max_payload)
        header = self._read_exactly(header_len)
        payload = self._read_exactly(payload_len) if payload_len else b""
        return kind, header, payload

    def _read_exactly(self, size: int) -> bytes:
        data: bytes = self._reader.read(size)
        if len(data) != size:
            raise ProtocolError(f"stream ended inside a frame ({len(data)} of {size} bytes)")
        return data

    def _discard(self, size: int) -> None:
        while size:
            chunk = self._reader.read(min(size, 1 << 20))
            if not chunk:
                raise ProtocolError("stream ended inside a skipped frame")
            size -= len(chunk)

    def send(self, buffers: Buffers) -> None:
        """Write one whole frame; raises ``OSError`` when the peer is gone."""
        total = 0
        for buf in buffers:
            total += len(buf)
        with self._lock:
            if total <= SMALL_FRAME:
                self._sock.sendall(b"".join(buffers))
            else:
                _send_gathered(self._sock, buffers)

    def take_fds(self) -> list[int]:
        """Descriptors received (``SCM_RIGHTS``) since the last call, oldest first; the
        caller owns them. The frame that announced them has been read when this is called
        (the kernel delivers a descriptor with the first byte sent alongside it)."""
        fds, self._raw.fds = self._raw.fds, []
        return fds

    def close(self) -> None:
        """Close the socket (and any received descriptor nobody took); pending reads see end
        of stream."""
        for fd in self.take_fds():
            os.close(fd)
        self._reader.close()
        self._sock.close()


#: Room for a few descriptors per read; more than the protocol ever sends at once.
_ANCILLARY = socket.CMSG_SPACE(4 * array.array("i").itemsize)


class _FdSocketIO(io.RawIOBase):
    """``socket.SocketIO`` for reading, except that it uses ``recvmsg_into`` and keeps any
    descriptors passed with the bytes (``SCM_RIGHTS``, close-on-exec) in ``fds``: a plain
    ``recv`` would make the kernel discard them."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self.fds: list[int] = []

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        nbytes, ancdata, _flags, _addr = self._sock.recvmsg_into(
            [buffer], _ANCILLARY, socket.MSG_CMSG_CLOEXEC
        )
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                self.fds.extend(fds)
        return nbytes


def _send_gathered(sock: socket.socket, buffers: Buffers) -> None:
    # Scatter/gather write: large bodies go to the kernel without being joined first.
    views = [memoryview(b).cast("B") for b in buffers if len(b)]
    first = 0
    while first < len(views):
        sent = sock.sendmsg(views[first : first + _MAX_IOV])
        while sent:
            size = views[first].nbytes
            if sent >= size:
                sent -= size
                first += 1
            else:
                views[first] = views[first][sent:]
                sent = 0
