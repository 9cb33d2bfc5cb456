"""Getting batches onto the model's device: pinned staging, non-blocking copies, a copy stream.

``DeviceFeeder`` is the one place a handler's input crosses from host to device:

* ``to_device(tensor)`` (the serial path, on the inference thread): on CUDA with
  ``pin_memory`` the tensor is copied into a reused page-locked buffer (``PinnedBufferPool``)
  and sent with ``non_blocking=True`` on the current stream; the buffer is reused only after a
  CUDA event recorded behind the copy has passed. Kernels queued later on the same stream see
  the copied data, and reading a result back (``.cpu()``, ``.tolist()``) waits for them, so
  outputs need no extra synchronisation.
* ``prefetch(tensor)`` (the pipelined path, on the preprocessing thread) issues the same copy
  on a dedicated copy stream, so it overlaps the previous batch's forward pass; ``ready(p)``
  (on the inference thread) makes the compute stream wait for that copy's event and records
  the tensor's use there, so the allocator does not recycle its memory early.

On CPU every method returns its input unchanged (no copy at all).

Failure mode: CUDA errors propagate (the service answers the batch 500, 507 for out of memory).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .pinned import PinnedBufferPool

#: torch.cuda's Stream and Event constructors are untyped; called through ``Any``.
_CUDA: Any = torch.cuda


@dataclass(frozen=True, slots=True)
class Prefetched:
    """A tensor whose copy to the device was issued; ``event`` marks its completion."""

    tensor: torch.Tensor
    event: Any | None = None


def map_tensors(value: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``fn`` applied to every tensor in ``value`` (tuples, lists and dict values included)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    return value


class DeviceFeeder:
    """Host-to-device transfer for one handler; see the module docstring."""

    def __init__(self, device: torch.device, *, pin_memory: bool = True, buffers: int = 4) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.pool: PinnedBufferPool | None = (
            PinnedBufferPool(pin=True, max_buffers=buffers) if self.cuda and pin_memory else None
        )
        self._copy_stream: Any = _CUDA.Stream(device) if self.cuda else None

    def _host_side(self, tensor: torch.Tensor) -> bool:
        return self.cuda and tensor.device.type == "cpu"

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on the device, copied on the current stream (see the module docstring)."""
        if not self._host_side(tensor):
            return tensor.to(self.device) if self.cuda else tensor
        if self.pool is None:
            return tensor.to(self.device)
        view, buffer = self.pool.stage(tensor)
        moved = view.to(self.device, non_blocking=True)
        event = _CUDA.Event()
        event.record(torch.cuda.current_stream(self.device))
        self.pool.release(buffer, event)
        return moved

    def prefetch(self, tensor: torch.Tensor) -> Prefetched:
        """Issue ``tensor``'s copy on the copy stream; ``Prefetched(tensor)`` on CPU."""
        if not self._host_side(tensor):
            return Prefetched(tensor)
        with torch.cuda.device(self.device), torch.cuda.stream(self._copy_stream):
            if self.pool is None:
                moved = tensor.to(self.device, non_blocking=True)
                buffer = None
            else:
                view, buffer = self.pool.stage(tensor)
                moved = view.to(self.device, non_blocking=True)
            event = _CUDA.Event()
            event.record(self._copy_stream)
        if buffer is not None and self.pool is not None:
            self.pool.release(buffer, event)
        return Prefetched(moved, event)

    def ready(self, prefetched: Prefetched) -> torch.Tensor:
        """The prefetched tensor, safe to use on the current stream."""
        if prefetched.event is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(prefetched.event)
            prefetched.tensor.record_stream(stream)
        return prefetched.tensor


def apply_memory_fraction(gpu_id: int | None, fraction: float | None) -> bool:
    """Cap this process's CUDA caching allocator at ``fraction`` of GPU ``gpu_id``'s memory.

    Returns whether a cap was set (not on CPU, without CUDA, or without a fraction).
    """
    if gpu_id is None or gpu_id < 0 or fraction is None or not torch.cuda.is_available():
        return False
    torch.cuda.set_per_process_memory_fraction(fraction, gpu_id)
    return True


__all__ = ["DeviceFeeder", "Prefetched", "apply_memory_fraction", "map_tensors"]
