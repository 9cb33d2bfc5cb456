"""Request envelopes (``service_envelope``): ``body``, ``json``, ``kserve``, ``kservev2``.

``envelope_class(name)`` returns the class for a ``service_envelope`` value; the submodules
are also TorchServe's ``ts.torch_handler.request_envelope.*`` modules. See ``base`` for the
contract and failure modes.
"""

from __future__ import annotations

from . import base, body, json, kserve, kservev2
from .base import BaseEnvelope, EnvelopeError, Parsed

__all__ = [
    "ENVELOPES",
    "BaseEnvelope",
    "EnvelopeError",
    "Parsed",
    "base",
    "body",
    "envelope_class",
    "json",
    "kserve",
    "kservev2",
]

ENVELOPES: dict[str, type[BaseEnvelope]] = {
    "body": body.BodyEnvelope,
    "json": json.JSONEnvelope,
    "kserve": kserve.KServeEnvelope,
    "kservev2": kservev2.KServev2Envelope,
}


def envelope_class(name: str) -> type[BaseEnvelope]:
    """The envelope class for ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return ENVELOPES[name]
    except KeyError:
        known = ", ".join(sorted(ENVELOPES))
        raise ValueError(f"unknown service envelope {name!r} (known: {known})") from None
