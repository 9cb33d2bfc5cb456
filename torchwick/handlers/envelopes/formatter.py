"""Answering an envelope's requests: the handler's flat results split back per request and
wrapped by the envelope (``ModelService`` uses it for ``service_envelope`` models).

Failure mode: a request whose share holds a ``PredictionException`` answers with it; a share
the envelope cannot wrap answers 500 naming why (logged); the other requests are unaffected.
"""

from __future__ import annotations

import logging
from typing import Any

from ..context import Context
from ..errors import PredictionException, last_traceback_line
from .base import BaseEnvelope, Parsed

logger = logging.getLogger("torchwick.model")


class EnvelopeFormatter:
    """Splits the handler's results back per request and wraps each request's share.

    A share holding a ``PredictionException`` (a rejected item) answers with that error; a
    share the envelope cannot wrap answers 500 naming why.
    """

    def __init__(self, envelope: BaseEnvelope, parsed: list[Parsed], context: Context) -> None:
        self.envelope = envelope
        self.parsed = parsed
        self.context = context

    def answers(self, output: list[Any]) -> list[Any]:
        answers: list[Any] = []
        cursor = 0
        for parsed in self.parsed:
            share = output[cursor : cursor + len(parsed.items)]
            cursor += len(parsed.items)
            rejected = next((x for x in share if isinstance(x, PredictionException)), None)
            if rejected is not None:
                answers.append(rejected)
                continue
            try:
                answers.append(self.envelope.format_request(parsed, share, self.context))
            except (TypeError, ValueError, RuntimeError) as exc:
                logger.error("the %s envelope cannot wrap a result: %s", self.envelope.name, exc)
                answers.append(
                    PredictionException(
                        f"service envelope {self.envelope.name!r} cannot wrap the handler's "
                        f"result: {last_traceback_line(exc)}",
                        500,
                    )
                )
        return answers
