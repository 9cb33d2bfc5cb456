"""Reused host staging buffers for host-to-device copies (page-locked on CUDA).

A batch headed for the GPU is copied into a buffer of this pool and sent with
``non_blocking=True``; the copy reads the buffer asynchronously, so the buffer may be reused
only once the copy has finished. ``release(buffer, fence)`` therefore parks it until
``fence.query()`` is true (a ``torch.cuda.Event`` recorded after the copy); ``stage`` then
hands it out again. Pinned allocations are slow (``cudaHostAlloc``) and pin physical memory,
so the pool keeps at most ``max_buffers`` and reuses the smallest free one that fits.

With ``pin=False`` the pool works the same on ordinary memory: that is how its reuse logic
is tested on machines without CUDA.

Failure mode: ``ValueError`` for ``max_buffers < 1``; allocation errors (out of pinned
memory) propagate from ``torch.empty``.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Protocol

import torch


class Fence(Protocol):
    """Something that tells when the device has finished reading a buffer."""

    def query(self) -> bool: ...

    def synchronize(self) -> None: ...


class DoneFence:
    """A fence that is already passed: for copies that completed synchronously."""

    def query(self) -> bool:
        return True

    def synchronize(self) -> None:
        return None


class PinnedBufferPool:
    """Flat staging buffers, reused across batches; thread-safe."""

    def __init__(self, *, pin: bool, max_buffers: int = 4) -> None:
        if max_buffers < 1:
            raise ValueError(f"max_buffers must be at least 1, got {max_buffers}")
        self.pin = pin
        self.max_buffers = max_buffers
        self._lock = threading.Lock()
        self._free: list[torch.Tensor] = []
        self._pending: deque[tuple[torch.Tensor, Fence]] = deque()
        #: Buffers allocated so far (reuse keeps this from growing with the batch count).
        self.allocations = 0

    @property
    def buffer_count(self) -> int:
        """Buffers held: free plus waiting for their fence."""
        with self._lock:
            return len(self._free) + len(self._pending)

    def stage(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(view, buffer)``: ``tensor``'s values copied into a pooled buffer, viewed in
        ``tensor``'s shape. Give ``buffer`` back with ``release`` once the copy is issued."""
        buffer = self._acquire(tensor.numel(), tensor.dtype)
        view = buffer[: tensor.numel()].view(tensor.shape)
        view.copy_(tensor)
        return view, buffer

    def release(self, buffer: torch.Tensor, fence: Fence) -> None:
        """Return ``buffer``; it is reused only after ``fence`` has passed."""
        with self._lock:
            self._pending.append((buffer, fence))

    def _reclaim(self) -> None:
        # Fences complete in the order their copies were issued on one stream; a passed fence
        # behind an unpassed one is picked up on a later call.
        while self._pending and self._pending[0][1].query():
            self._free.append(self._pending.popleft()[0])

    def _acquire(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        while True:
            with self._lock:
                self._reclaim()
                fitting = [b for b in self._free if b.dtype == dtype and b.numel() >= numel]
                if fitting:
                    best = min(fitting, key=lambda b: b.numel())
                    self._free.remove(best)
                    return best
                held = len(self._free) + len(self._pending)
                if held >= self.max_buffers and self._free:
                    # Full, and no free buffer fits: drop the smallest free one for a new one.
                    self._free.remove(min(self._free, key=lambda b: b.numel()))
                    held -= 1
                if held < self.max_buffers:
                    self.allocations += 1
                    return torch.empty(max(1, numel), dtype=dtype, pin_memory=self.pin)
                oldest = self._pending[0][1]
            # Every buffer is still being read: wait for the oldest copy, outside the lock.
            oldest.synchronize()
