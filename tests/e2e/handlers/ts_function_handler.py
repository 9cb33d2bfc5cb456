"""Module-level entry points, TorchServe style: ``handle(data, context)`` (the default) and
``shout`` (selected with ``--handler ts_function_handler.py:shout``)."""

import os

_state = {}


def _initialize(context):
    properties = context.system_properties
    _state["model_dir"] = properties.get("model_dir")
    _state["batch_size"] = properties.get("batch_size")
    _state["files"] = sorted(os.listdir(_state["model_dir"]))


def _texts(data):
    texts = []
    for row in data:
        value = row.get("data") or row.get("body")
        if isinstance(value, (bytes, bytearray)):
            value = value.decode("utf-8")
        texts.append(value)
    return texts


def handle(data, context):
    if data is None:
        _initialize(context)
        return None
    archived = "ts_function_handler.py" in _state["files"]
    return [{"echo": text, "entry": "handle", "archived": archived} for text in _texts(data)]


def shout(data, context):
    if data is None:
        _initialize(context)
        return None
    for idx in range(len(data)):
        context.set_response_content_type(idx, "text/plain")
        context.set_response_header(idx, "X-Entry", "shout")
    return [text.upper() + "!" for text in _texts(data)]
