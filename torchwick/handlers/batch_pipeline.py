"""A model service's batch in two stages: ``prepare`` (preprocessing thread), ``complete``.

A pipelined worker (``torchwick.server.workers.pipelined``) calls ``prepare`` for batch N+1
while ``complete`` of batch N runs; together they give the same answers ``predict`` gives.

* ``prepare`` decodes every request (an undecodable one is answered 400 on its own, as in
  ``predict``) and, when the handler is ``stageable`` and the batch is a plain prediction
  (no service envelope, no ``describe``/``explain`` header), runs the handler's first stage
  (``staged.stage_preprocess``): image decode, resize, stacking, the copy to the GPU. An
  exception there is kept and raised in ``complete``, so it is answered exactly as if
  ``handle`` had raised it (500, 507, or the ``PredictionException``'s status).
* ``complete`` runs the rest on the inference thread: the staged second stage, or the whole
  ``predict_decoded`` for a batch that was not staged.

``PreparedBatch.exclusive`` marks a batch that runs the stageable handler whole: the pipeline
must not preprocess the next batch until it is complete, because a whole run and a first stage
would share the handler's per-batch state.

Failure mode: ``prepare`` never raises for handler failures; ``complete`` never raises for
anything the service maps to a status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .messages import BatchTimings, PredictRequest, PredictResponse
from .staged import StagedBatch, stage_finish, stage_preprocess, stageable

if TYPE_CHECKING:
    from .service import ModelService

Decoded = tuple[
    dict[str, PredictResponse], list[PredictRequest], list[tuple[dict[str, Any], dict[str, Any]]]
]


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch after the first stage (see the module docstring)."""

    batch: Sequence[PredictRequest]
    failed: dict[str, PredictResponse]
    kept: list[PredictRequest]
    decoded: list[tuple[dict[str, Any], dict[str, Any]]]
    staged: StagedBatch | None = None
    error: Exception | None = None
    exclusive: bool = False


def merge_answers(
    batch: Sequence[PredictRequest],
    failed: dict[str, PredictResponse],
    answered: list[PredictResponse],
) -> list[PredictResponse]:
    """The answers of ``batch`` in order: ``failed`` ones by request id, the rest from
    ``answered``."""
    if not failed:
        return answered
    by_id = {r.request_id: r for r in answered} | failed
    return [by_id[r.request_id] for r in batch]


def _plain(service: ModelService, decoded: list[tuple[dict[str, Any], dict[str, Any]]]) -> bool:
    if service.envelope is not None:
        return False
    for _, headers in decoded:
        for name in ("describe", "explain"):
            if str(headers.get(name)).lower() == "true":
                return False
    return True


def prepare(service: ModelService, batch: Sequence[PredictRequest]) -> PreparedBatch:
    """The first stage of ``batch`` (see the module docstring)."""
    failed, kept, decoded = service.decode_batch(batch)
    handler = service.entry.instance
    can_stage = stageable(handler)
    if not kept or not can_stage or not _plain(service, decoded):
        return PreparedBatch(batch, failed, kept, decoded, exclusive=can_stage and bool(kept))
    assert handler is not None  # stageable() checked its type
    try:
        staged = stage_preprocess(handler, [row for row, _ in decoded])  # type: ignore[arg-type]
    except Exception as exc:
        return PreparedBatch(batch, failed, kept, decoded, error=exc)
    return PreparedBatch(batch, failed, kept, decoded, staged=staged)


def complete(service: ModelService, prepared: PreparedBatch) -> list[PredictResponse]:
    """The second stage of a prepared batch: one final response per request, in order."""
    service.last_timings = BatchTimings()
    kept, decoded = prepared.kept, prepared.decoded
    if not kept:
        return merge_answers(prepared.batch, prepared.failed, [])
    staged, error = prepared.staged, prepared.error
    if staged is None and error is None:
        answered = service.predict_decoded(kept, decoded)
        return merge_answers(prepared.batch, prepared.failed, answered)
    handler = service.entry.instance

    def second_stage() -> Any:
        if error is not None:
            raise error
        assert staged is not None
        return stage_finish(handler, staged, service.context)  # type: ignore[arg-type]

    ids = [r.request_id for r in kept]
    answered = service._run(
        ids, [row for row, _ in decoded], [h for _, h in decoded], call=second_stage
    )
    return merge_answers(prepared.batch, prepared.failed, answered)
