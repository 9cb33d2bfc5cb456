"""``json`` envelope (Google AI Platform / TF Serving style): ``{"instances": [...]}`` in,
``{"predictions": [...]}`` out.

Each instance is one handler item; an instance ``{"b64": "..."}`` becomes its decoded bytes,
and so does any ``{"b64": ...}`` value of an instance's fields. The answer is the JSON text
``{"predictions": [one result per instance]}`` (compact ``json.dumps``, as TorchServe).

Failure mode: a body that is not a JSON object with a non-empty ``instances`` list, or bad
base64 -> ``EnvelopeError`` (400) for that request.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .base import BaseEnvelope, EnvelopeError, Parsed, json_body


def _b64(value: Any) -> Any:
    if isinstance(value, dict) and list(value.keys()) == ["b64"]:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise EnvelopeError("service envelope 'json': a 'b64' value is not base64") from None
    return value


class JSONEnvelope(BaseEnvelope):
    """Instances of every request joined into one batch; predictions split back."""

    name = "json"

    def parse_request(self, row: Any, explain: bool) -> Parsed:
        body = json_body(self.name, row, allow_row=True)
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            raise EnvelopeError(
                "service envelope 'json': the body needs a non-empty 'instances' list"
            )
        items = []
        for instance in instances:
            item = _b64(instance)
            if isinstance(item, dict):
                item = {key: _b64(value) for key, value in item.items()}
            items.append(item)
        return Parsed(items, explain)

    def format_request(self, parsed: Parsed, outputs: list[Any], context: Any) -> Any:
        return json.dumps({"predictions": outputs})
