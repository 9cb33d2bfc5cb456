"""Errors a handler raises (or returns) to choose the status of a request.

``PredictionException`` is TorchServe's ``ts.utils.util.PredictionException``: raised from a
handler it gives every request of the batch ``error_code`` and ``message``. Returned *in a
request's slot* of the handler's output list (instead of that request's result) it answers
only that request, which is how default handlers reject one bad request while the rest of the
batch carries on. ``InvalidInput`` is the 400 flavour for bad client input.

``HandlerLoadError`` is raised by ``ModelService.load`` when the handler cannot be found or its
``initialize`` fails.
"""

from __future__ import annotations

import traceback


class PredictionException(Exception):
    """A handler-chosen failure: ``error_code`` becomes the HTTP status, ``message`` the text.

    ``type_name`` is the ``type`` field of the JSON error body the client receives.
    """

    type_name = "InternalServerException"

    def __init__(self, message: str, error_code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code

    def __str__(self) -> str:
        return f"{self.message} : {self.error_code}"


class InvalidInput(PredictionException):
    """The request's input is unusable (undecodable image, wrong shape, empty body, ...).

    The message must say what was wrong; it is sent to the client with status 400.
    """

    type_name = "BadInput"

    def __init__(self, message: str, error_code: int = 400) -> None:
        super().__init__(message, error_code)


class HandlerLoadError(Exception):
    """The handler could not be loaded or initialised.

    ``status`` is 507 when the cause was running out of memory, else 500. ``message`` ends with
    the last line of the underlying traceback so that the model log and the registration
    answer name the real cause.
    """

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def is_out_of_memory(exc: BaseException) -> bool:
    """True for host ``MemoryError`` and CUDA out-of-memory (matched by type, not by text)."""
    import torch

    return isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError))


def last_traceback_line(exc: BaseException) -> str:
    """``'ValueError: details'``: the one line of a traceback that names the cause."""
    lines = traceback.format_exception_only(type(exc), exc)
    return lines[-1].strip() if lines else type(exc).__name__
