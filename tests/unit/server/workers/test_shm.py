"""The shared-memory arena, its descriptors and frames, with real memfds and real mappings."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import numpy as np
import pytest

from torchwick.handlers.messages import InputParameter, PredictRequest, PredictResponse
from torchwick.server.workers import ipc
from torchwick.server.workers.ipc import BAD_ANSWER, Kind, ProtocolError
from torchwick.server.workers.shm import (
    STAMP_SIZE,
    ShmArena,
    ShmMapping,
    ShmMissing,
    ShmStale,
    ShmTooSmall,
)
from torchwick.server.workers.shm_frames import (
    AnswerRegion,
    attach,
    decode_answer,
    decode_requests,
    encode_answer,
    encode_requests,
    with_refused,
)
from torchwick.server.workers.shm_lane import ShmLane, ShmSettings

MiB = 1024 * 1024


def _frame_parts(buffers: ipc.Buffers) -> tuple[int, bytes, bytes]:
    data = b"".join(bytes(b) for b in buffers)
    kind, header_len, payload_len = ipc.parse_prefix(data[: ipc.PREFIX_SIZE])
    header = data[ipc.PREFIX_SIZE : ipc.PREFIX_SIZE + header_len]
    payload = data[ipc.PREFIX_SIZE + header_len :]
    assert len(payload) == payload_len
    return kind, header, payload


@pytest.fixture
def arena() -> Iterator[ShmArena]:
    made = ShmArena(1 * MiB)
    yield made
    made.close()


def _mapping(arena: ShmArena) -> ShmMapping:
    assert arena.fd is not None
    return ShmMapping(os.dup(arena.fd), arena.size, arena.arena_id)


@pytest.fixture
def lane() -> Iterator[tuple[ShmLane, ShmMapping]]:
    made = ShmLane(ShmSettings(threshold=1000, size=1 * MiB, max_response_size=200_000))
    arena = made.open()
    mapping = _mapping(arena)
    arena.close_fd()
    made.attached(200, "mapped")
    yield made, mapping
    made.close()
    gc.collect()  # views the test made are gone: the mapping can go too
    mapping.close()


# ---- arena --------------------------------------------------------------------------------------


def test_allocation_is_first_fit_aligned_and_stamped(arena: ShmArena) -> None:
    a = arena.allocate(100)
    b = arena.allocate(1000)
    assert a is not None and b is not None
    assert (a.offset, a.capacity, a.data) == (0, 128, STAMP_SIZE)
    assert b.offset == a.end and b.generation == a.generation + 1
    mapping = _mapping(arena)
    mapping.check(arena.arena_id, b.offset, b.generation, b.data, 1000)
    arena.free(a)
    c = arena.allocate(64)  # fits the hole a left
    assert c is not None and c.offset == 0 and c.generation > b.generation
    assert arena.allocate(2 * MiB) is None  # never more than the arena
    assert [e.offset for e in arena.live] == [0, b.offset]


def test_a_full_arena_allocates_nothing_until_freed(arena: ShmArena) -> None:
    whole = arena.allocate(arena.size - STAMP_SIZE)
    assert whole is not None and arena.allocate(1) is None
    arena.free(whole)
    assert arena.allocate(1) is not None


def test_close_unmaps_and_is_idempotent(arena: ShmArena) -> None:
    fd = arena.fd
    assert fd is not None
    arena.close()
    arena.close()
    assert arena.closed and arena.fd is None and arena.allocate(10) is None
    with pytest.raises(OSError):
        os.fstat(fd)  # the frontend's descriptor is closed with it


def test_the_arena_is_sealed_against_resizing(arena: ShmArena) -> None:
    assert arena.fd is not None
    with pytest.raises(PermissionError):
        os.ftruncate(arena.fd, 4096)  # handler code cannot make the frontend's reads fault
    with pytest.raises(PermissionError):
        os.ftruncate(arena.fd, 2 * arena.size)


# ---- descriptors the worker cannot honour ------------------------------------------------------


def test_views_are_read_only_and_see_what_the_frontend_wrote(arena: ShmArena) -> None:
    extent = arena.allocate(16)
    assert extent is not None
    arena.write(extent.data, b"0123456789abcdef")
    view = _mapping(arena).view(arena.arena_id, extent.offset, extent.generation, extent.data, 16)
    assert bytes(view) == b"0123456789abcdef"
    with pytest.raises(TypeError):
        view[0] = 1


def test_other_arena_is_missing(arena: ShmArena) -> None:
    extent = arena.allocate(16)
    assert extent is not None
    with pytest.raises(ShmMissing, match="not attached"):
        _mapping(arena).view(arena.arena_id + 1, extent.offset, extent.generation, extent.data, 1)


@pytest.mark.parametrize(
    ("offset", "at", "size"),
    [(1 * MiB, 1 * MiB + STAMP_SIZE, 1), (0, STAMP_SIZE, 129), (0, 10, 4), (-64, 0, 1)],
    ids=["extent-past-the-arena", "longer-than-the-extent", "inside-the-stamp", "negative"],
)
def test_ranges_that_do_not_fit_are_too_small(
    arena: ShmArena, offset: int, at: int, size: int
) -> None:
    extent = arena.allocate(128)
    assert extent is not None and extent.offset == 0
    with pytest.raises(ShmTooSmall):
        _mapping(arena).view(arena.arena_id, offset, extent.generation, at, size)


def test_freed_and_reused_extents_are_stale(arena: ShmArena) -> None:
    mapping = _mapping(arena)
    old = arena.allocate(64)
    assert old is not None
    arena.free(old)
    with pytest.raises(ShmStale, match="generation 0"):
        mapping.view(arena.arena_id, old.offset, old.generation, old.data, 8)
    new = arena.allocate(64)
    assert new is not None and new.offset == old.offset
    with pytest.raises(ShmStale, match=f"generation {new.generation}"):
        mapping.view(arena.arena_id, old.offset, old.generation, old.data, 8)
    assert len(mapping.view(arena.arena_id, new.offset, new.generation, new.data, 8)) == 8


def test_a_mapping_larger_than_the_segment_is_refused(arena: ShmArena) -> None:
    assert arena.fd is not None
    with pytest.raises(ShmTooSmall, match="announced"):
        ShmMapping(os.dup(arena.fd), 2 * arena.size, arena.arena_id)


# ---- request frames -----------------------------------------------------------------------------


def _request(rid: str, *values: tuple[str, bytes, str | None]) -> PredictRequest:
    return PredictRequest(rid, (("h", "v"),), tuple(InputParameter(*v) for v in values))


def test_large_values_travel_as_views_small_ones_in_the_payload(
    lane: tuple[ShmLane, ShmMapping],
) -> None:
    shm_lane, mapping = lane
    tensor = np.arange(1000, dtype=np.float32)
    batch = [
        _request("a", ("body", tensor.tobytes(), None), ("small", b"tiny", "text/plain")),
        _request("b", ("body", b"short", None)),
    ]
    buffers = encode_requests(Kind.PREDICT, 7, batch, shm_lane)
    kind, header, payload = _frame_parts(buffers)
    assert kind == Kind.PREDICT and payload == b"tinyshort"  # the 4000 bytes are not in it
    assert (shm_lane.counters.values_sent, shm_lane.counters.bytes_sent) == (1, 4000)
    decoded = decode_requests(header, payload, mapping)
    assert decoded.batch_id == 7 and decoded.refused == {}
    first = decoded.requests[0].parameters[0].value
    assert isinstance(first, memoryview) and first.readonly
    array = np.frombuffer(first, np.float32)  # zero-copy: a view of the mapped memory
    assert np.array_equal(array, tensor) and not array.flags.writeable
    assert [p.value for p in decoded.requests[0].parameters[1:]] == [b"tiny"]
    assert decoded.requests[1].parameters[0].value == b"short"
    assert decoded.region is not None and decoded.region.size >= 1000
    # The same batch decodes identically through the plain decoder when the lane is off.
    shm_lane.active = False
    plain = decode_requests(
        *_frame_parts(encode_requests(Kind.PREDICT, 8, batch, shm_lane))[1:], None
    )
    assert [[bytes(p.value) for p in r.parameters] for r in plain.requests] == [
        [bytes(p.value) for p in r.parameters] for r in decoded.requests
    ]


def test_unresolvable_descriptors_refuse_their_request_only(
    lane: tuple[ShmLane, ShmMapping],
) -> None:
    shm_lane, mapping = lane
    batch = [
        _request("good", ("body", b"x" * 10, None)),
        _request("big", ("body", b"y" * 5000, None)),
    ]
    _, header, payload = _frame_parts(encode_requests(Kind.PREDICT, 1, batch, shm_lane))

    missing = decode_requests(header, payload, None)  # no arena attached in this worker
    assert list(missing.refused) == ["big"] and "not attached" in missing.refused["big"]
    assert missing.requests[0].parameters[0].value == b"x" * 10

    shm_lane.settle(1)  # the frontend freed the extent: the worker now reads a stale one
    stale = decode_requests(header, payload, mapping)
    assert list(stale.refused) == ["big"] and "freed or reused" in stale.refused["big"]
    assert stale.region is None  # the answer region is gone too: answers go by socket

    answered = [PredictResponse("good", body=b"ok")]
    merged = with_refused(stale, answered)
    assert [(r.request_id, r.status) for r in merged] == [("good", 200), ("big", 500)]
    assert merged[1].reason.startswith("Shared memory: input 'body'")


def test_a_descriptor_longer_than_its_extent_is_refused(lane: tuple[ShmLane, ShmMapping]) -> None:
    shm_lane, mapping = lane
    reservation = shm_lane.reserve(3, 1, 1024)
    assert reservation is not None
    extent = reservation.extent
    big = ("body", None, extent.capacity + 1, (extent.offset, extent.generation, extent.data))
    head = (
        shm_lane.arena.arena_id if shm_lane.arena else 0,
        extent.offset,
        extent.generation,
        0,
        0,
    )
    header = ipc._packer.pack((3, [("r", (), [big])], head))
    decoded = decode_requests(header, b"", mapping)
    assert "do not fit" in decoded.refused["r"]


def test_malformed_request_frames_are_protocol_errors(lane: tuple[ShmLane, ShmMapping]) -> None:
    _, mapping = lane
    with pytest.raises(ProtocolError):
        decode_requests(ipc._packer.pack((1, [("r", (), [("body", None)])])), b"", mapping)
    with pytest.raises(ProtocolError):
        decode_requests(ipc._packer.pack((1, [("r", (), [("body", None, 3)])])), b"ab", mapping)


def test_a_full_arena_falls_back_to_the_socket(lane: tuple[ShmLane, ShmMapping]) -> None:
    shm_lane, _ = lane
    batch = [_request("a", ("body", b"z" * 2 * MiB, None))]  # larger than the whole arena
    _, header, payload = _frame_parts(encode_requests(Kind.PREDICT, 1, batch, shm_lane))
    assert len(payload) == 2 * MiB and shm_lane.counters.fallbacks == 1
    assert (
        decode_requests(header, payload, None).requests[0].parameters[0].value
        == batch[0].parameters[0].value
    )


# ---- answers ------------------------------------------------------------------------------------


def test_large_answers_come_back_through_the_region(lane: tuple[ShmLane, ShmMapping]) -> None:
    shm_lane, mapping = lane
    _, header, payload = _frame_parts(
        encode_requests(Kind.PREDICT, 4, [_request("a"), _request("b"), _request("c")], shm_lane)
    )
    decoded = decode_requests(header, payload, mapping)
    assert decoded.region is not None
    big = bytes(range(256)) * 40
    responses = [
        PredictResponse("a", body=big, content_type="application/octet-stream"),
        PredictResponse("b", body=b"small"),
        PredictResponse("c", status=404, reason="nope", body=big[:2000]),
    ]
    frame = encode_answer(
        Kind.PREDICT_RESULT,
        4,
        responses,
        None,
        region=decoded.region,
        mapping=mapping,
        threshold=1000,
    )
    _, answer_header, answer_payload = _frame_parts(frame)
    assert answer_payload == b"small"
    batch_id, got, timings = decode_answer(answer_header, answer_payload, shm_lane)
    assert (batch_id, timings) == (4, None)
    assert got == responses  # equal answers, bodies copied out (bytes, not views)
    assert all(type(r.body) is bytes for r in got)
    assert (shm_lane.counters.bodies_received, shm_lane.counters.bytes_received) == (2, 12240)
    shm_lane.settle(4)
    assert shm_lane.arena is not None and shm_lane.arena.live == ()


def test_an_answer_outside_its_region_is_a_500_for_that_request(
    lane: tuple[ShmLane, ShmMapping],
) -> None:
    shm_lane, mapping = lane
    _, header, payload = _frame_parts(encode_requests(Kind.PREDICT, 9, [_request("a")], shm_lane))
    region = decode_requests(header, payload, mapping).region
    assert region is not None
    items = [("a", 200, "", None, (), 10, True, region.at - 64), ("b", 200, "", None, (), 2, True)]
    answer = ipc._packer.pack((9, items))
    _, got, _ = decode_answer(answer, b"ok", shm_lane)
    assert [(r.request_id, r.status, r.reason) for r in got] == [
        ("a", 500, BAD_ANSWER),
        ("b", 200, ""),
    ]


def test_settle_frees_older_batches_and_close_frees_all(lane: tuple[ShmLane, ShmMapping]) -> None:
    shm_lane, _ = lane
    assert shm_lane.reserve(1, 10, 0) is not None
    assert shm_lane.reserve(2, 10, 0) is not None
    assert shm_lane.reserve(3, 10, 0) is None  # half the arena each: a third one waits
    assert shm_lane.arena is not None and len(shm_lane.arena.live) == 2
    shm_lane.settle(1)
    assert shm_lane.reservation(1) is None and shm_lane.reservation(2) is not None
    shm_lane.settle_oldest()
    assert shm_lane.arena.live == ()
    shm_lane.close()
    assert shm_lane.arena.closed and not shm_lane.active


def test_region_takes_aligned_places_until_full() -> None:
    region = AnswerRegion(at=640, size=200)
    assert [region.take(10), region.take(100), region.take(100)] == [640, 704, None]


# ---- attach -------------------------------------------------------------------------------------


def test_attach_maps_the_passed_descriptor_and_answers(arena: ShmArena) -> None:
    assert arena.fd is not None
    header = ipc._packer.pack((arena.arena_id, arena.size))
    mapping, frame = attach(header, [os.dup(arena.fd)])
    assert mapping is not None and mapping.arena_id == arena.arena_id
    kind, answer, _ = _frame_parts(frame)
    assert (kind, ipc.decode_load_result(answer)[0]) == (Kind.SHM_ATTACH_RESULT, 200)

    mapping, frame = attach(header, [])
    assert mapping is None
    assert "without a descriptor" in ipc.decode_load_result(_frame_parts(frame)[1])[1]

    extra = os.dup(arena.fd)
    mapping, frame = attach(ipc._packer.pack(("bad",)), [extra])
    assert mapping is None and ipc.decode_load_result(_frame_parts(frame)[1])[0] == 500
    with pytest.raises(OSError):
        os.fstat(extra)  # consumed: a refused descriptor is closed, not leaked
