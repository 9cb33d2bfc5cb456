"""``ts.protocol.otf_message_handler``: the deprecated home of
``send_intermediate_predict_response``.

Calls still work and emit a ``DeprecationWarning`` pointing at ``ts.handler_utils.utils``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from ..context import Context
from ..streaming import send_intermediate_predict_response as _send

__all__ = ["send_intermediate_predict_response"]


def send_intermediate_predict_response(
    ret: Sequence[Any],
    req_id_map: Mapping[int, str],
    message: str,
    code: int,
    context: Context,
) -> bool:
    """Deprecated alias of ``ts.handler_utils.utils.send_intermediate_predict_response``."""
    warnings.warn(
        "ts.protocol.otf_message_handler.send_intermediate_predict_response is deprecated; "
        "import it from ts.handler_utils.utils",
        DeprecationWarning,
        stacklevel=2,
    )
    return _send(ret, req_id_map, message, code, context)
