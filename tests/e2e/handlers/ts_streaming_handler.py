"""Streaming, as in TorchServe's test_send_intermediate_prediction_response.py: three
intermediate "hello" parts, then the final "hello world "."""

import time

from ts.handler_utils.utils import send_intermediate_predict_response


def handle(data, context):
    if data is None:
        return None
    for _ in range(3):
        parts = ["hello"] * len(data)
        send_intermediate_predict_response(
            parts, context.request_ids, "Intermediate Prediction success", 200, context
        )
        time.sleep(0.2)
    return ["hello world "] * len(data)
