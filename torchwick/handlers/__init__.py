"""The handler side of torchwick: what runs inside a model worker.

Import the pieces from their modules (this package imports nothing, so that the server,
which only needs ``torchwick.handlers.messages``, never loads torch):

* ``torchwick.handlers.service``: ``ModelService``, ``HandlerLoadError`` (the worker's API);
* ``torchwick.handlers.base_handler``: ``BaseHandler``;
* ``torchwick.handlers.context``: ``Context``;
* ``torchwick.handlers.errors``: ``PredictionException``, ``InvalidInput``;
* ``torchwick.handlers.metrics``: ``Dimension``, ``MetricTypes``;
* ``torchwick.handlers.streaming``: ``send_intermediate_predict_response``;
* ``torchwick.handlers.builtin``: the default handlers; ``runtimes``: model loading;
  ``compat``: the ``ts.*`` import aliases.
"""
