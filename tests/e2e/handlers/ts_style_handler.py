"""A custom handler written exactly as a TorchServe 0.12 user writes one.

It loads an eager model through ``BaseHandler.initialize`` (``--model-file`` +
``--serialized-file``), reads an extra file from ``model_dir``, and answers each request in
the batch with its own status, content type and headers. Request payloads are JSON objects:

* ``{"x": [64 floats]}``: the model's scores, as JSON;
* ``"format": "text"``: the predicted class as plain text instead;
* ``"created": true``: status 201 with a custom reason phrase;
* ``"hold": seconds``: sleep that long before running the batch (keeps the worker busy);
* no ``"x"`` or not 64 numbers: this request alone is answered 400 (status set per request);
* ``"teapot": true``: raise ``PredictionException(..., 418)`` (fails the whole batch);
* ``"explode": true``: raise a plain exception (500 for the whole batch).
"""

import json
import logging
import os
import time

import torch
from ts.context import Context
from ts.torch_handler.base_handler import BaseHandler
from ts.utils.util import PredictionException

logger = logging.getLogger(__name__)


class TsStyleHandler(BaseHandler):
    def __init__(self):
        super().__init__()
        self.initialized = False
        self.properties = {}
        self.greeting = None

    def initialize(self, context: Context):
        super().initialize(context)
        properties = context.system_properties
        self.model_dir = properties.get("model_dir")
        self.gpu_id = properties.get("gpu_id")
        self.batch_size = properties.get("batch_size")
        self.model_name = context.manifest["model"]["modelName"]
        self.model_version = context.manifest["model"]["modelVersion"]
        with open(os.path.join(self.model_dir, "settings.json")) as f:
            self.greeting = json.load(f)["greeting"]
        logger.info("initialized %s on gpu %s", self.model_name, self.gpu_id)
        self.initialized = True

    def preprocess(self, data):
        self.payloads = []
        self.errors = {}
        rows = []
        for idx, row in enumerate(data):
            payload = row.get("data") or row.get("body")
            if isinstance(payload, (bytes, bytearray)):
                payload = json.loads(payload.decode("utf-8"))
            if payload.get("teapot"):
                raise PredictionException("I'm short and stout", 418)
            if payload.get("explode"):
                raise ValueError("the handler blew up")
            self.payloads.append(payload)
            x = payload.get("x")
            if not isinstance(x, list) or len(x) != 64:
                self.errors[idx] = "x must be a list of 64 numbers"
                x = [0.0] * 64
            rows.append(x)
        hold = max(float(p.get("hold", 0)) for p in self.payloads)
        if hold:
            time.sleep(hold)
        return torch.tensor(rows, dtype=torch.float32)

    def postprocess(self, data):
        context = self.context
        context.metrics.add_counter("TsStyleRequests", len(data))
        results = []
        for idx, scores in enumerate(data.tolist()):
            payload = self.payloads[idx]
            context.set_response_header(idx, "X-Batch-Size", str(len(data)))
            context.set_response_header(idx, "X-Configured-Batch-Size", str(self.batch_size))
            context.set_response_header(idx, "X-Gpu-Id", str(self.gpu_id))
            context.set_response_header(idx, "X-Device", str(self.device))
            context.set_response_header(idx, "X-Model", f"{self.model_name}/{self.model_version}")
            context.set_response_header(idx, "X-Handler-Request-Id", context.get_request_id(idx))
            tag = context.get_request_header(idx, "x-client-tag")
            if tag is not None:
                context.set_response_header(idx, "X-Client-Tag-Echo", tag)
            if idx in self.errors:
                context.set_response_status(400, "Bad Input", idx)
                context.set_response_content_type(idx, "application/json")
                results.append(json.dumps({"error": self.errors[idx]}))
                continue
            if payload.get("created"):
                context.set_response_status(201, "Made Fresh", idx)
            best = max(range(len(scores)), key=scores.__getitem__)
            if payload.get("format") == "text":
                context.set_response_content_type(idx, "text/plain; charset=utf-8")
                results.append(f"{self.greeting}: class {best}")
            else:
                context.set_response_content_type(idx, "application/json")
                results.append(json.dumps({"argmax": best, "scores": scores}))
        return results
