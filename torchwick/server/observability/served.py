"""Which model version served the current request, for the access log of any protocol.

The data plane sets ``SERVED`` when it has routed a request (``DataPlane.infer``), in the task
that serves the request; the adapters' access-log writers (the REST middleware, the gRPC
access interceptor) read it back after the call, in the same task. A ``ContextVar`` keeps this
out of every adapter's signature: each HTTP request and each RPC runs in a task of its own, so
one request's value never leaks into another's. ``None`` means no model was involved (or the
request failed before routing).

``ANSWERED`` is the HTTP status of the answer a gRPC call failed with, set where a typed
error or a handler's status becomes a gRPC code (``grpc.status``), so the access log shows
the same status REST would have answered.
"""

from __future__ import annotations

from contextvars import ContextVar

#: ``(model, version)`` the current request was routed to, or ``None``.
SERVED: ContextVar[tuple[str, str] | None] = ContextVar("torchwick_served", default=None)
#: HTTP status of the typed error (or handler status) a gRPC call was answered with.
ANSWERED: ContextVar[int | None] = ContextVar("torchwick_answered", default=None)
