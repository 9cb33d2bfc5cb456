"""``ts.handler_utils.utils``: streaming partial responses from a handler.

``send_intermediate_predict_response(ret, req_id_map, message, code, context)`` sends
``ret[idx]`` for each ``idx`` of ``req_id_map`` as a non-final response carrying header
``ts_stream_next: true``. See ``torchwick.handlers.streaming`` for the failure modes.
"""

from __future__ import annotations

from ..streaming import send_intermediate_predict_response

__all__ = ["send_intermediate_predict_response"]
