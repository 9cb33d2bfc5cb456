"""``kserve`` envelope (KServe v1 protocol): ``{"instances": [...]}`` in,
``{"predictions": [...]}`` out, or ``{"explanations": [...]}`` for an explanation request.

Each instance is one handler item. TorchServe reads only the first request of a batch; here
every request is unwrapped and answered separately, so batching works.

Failure mode: a body that is not a JSON object with a non-empty ``instances`` list ->
``EnvelopeError`` (400) for that request.
"""

from __future__ import annotations

from typing import Any

from .base import BaseEnvelope, EnvelopeError, Parsed, json_body


class KServeEnvelope(BaseEnvelope):
    """KServe v1 wrapping and unwrapping."""

    name = "kserve"

    def parse_request(self, row: Any, explain: bool) -> Parsed:
        body = json_body(self.name, row)
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            raise EnvelopeError(
                "service envelope 'kserve': the body needs a non-empty 'instances' list"
            )
        return Parsed(list(instances), explain)

    def format_request(self, parsed: Parsed, outputs: list[Any], context: Any) -> Any:
        key = "explanations" if parsed.explain else "predictions"
        return {key: outputs}
