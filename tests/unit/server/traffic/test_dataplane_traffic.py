"""Traffic policies on the data plane over real archives and the fake worker supervisor."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from torchwick.handlers.messages import PredictRequest, PredictResponse
from torchwick.server.config.models_json import parse_models_json
from torchwick.server.contracts import InferenceRequest
from torchwick.server.dataplane import DataPlane, RegisterRequest
from torchwick.server.errors import BadRequest, ForbiddenOperation
from torchwick.server.model_store import ModelStore
from torchwick.server.settings import Settings

from ..registry.archives import build_archive
from ..scheduling.fake_pool import FakeSupervisor
from ..test_dataplane import Clock

VERSIONS = ("1.0", "2.0", "3.0")


class Env:
    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.store = tmp_path / "store"
        self.store.mkdir()
        self.settings = Settings(model_store=self.store, **settings)
        self.supervisor = FakeSupervisor()
        self.clock = Clock()
        self.plane = DataPlane(
            self.settings,
            self.supervisor,
            clock=self.clock,
            model_store=ModelStore(self.settings, work_root=tmp_path / "work"),
            cpu_count=2,
        )
        for version in VERSIONS:
            build_archive(self.store, version=version, file_name=f"echo-{version}.mar")

    async def register(self, version: str) -> None:
        await self.plane.register(RegisterRequest(f"echo-{version}.mar", initial_workers=1))
        self.supervisor.pools[f"echo_{version}"].respond = _answer(version)

    async def served(self, n: int, **headers: str) -> Counter[str]:
        seen: Counter[str] = Counter()
        for i in range(n):
            meta = tuple(headers.items()) if headers else ()
            result = await self.plane.infer("echo", None, InferenceRequest(f"r{i}", metadata=meta))
            seen[result.model_version] += 1
        return seen


def _answer(version: str, *, fail_every: int = 0) -> Any:
    calls = [0]

    def respond(request: PredictRequest) -> PredictResponse:
        calls[0] += 1
        if fail_every and calls[0] % fail_every == 0:
            return PredictResponse(request.request_id, status=500, body=b'{"error": "boom"}')
        return PredictResponse(request.request_id, body=f'{{"version": "{version}"}}'.encode())

    return respond


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    environment = Env(tmp_path)
    for version in VERSIONS:
        await environment.register(version)
    yield environment
    await environment.plane.close()


async def test_weighted_split_is_exact_up_to_one_request(env: Env) -> None:
    env.plane.traffic.set_policy("echo", {"weights": {"1.0": 50, "2.0": 30, "3.0": 20}})
    seen = await env.served(100)
    assert seen == {"1.0": 50, "2.0": 30, "3.0": 20}
    explicit = await env.plane.infer("echo", "3.0", InferenceRequest("x"))
    assert explicit.model_version == "3.0"
    status = env.plane.traffic.policy_status("echo")
    assert {(v["version"], v["arm"]): v["requests"] for v in status["variants"]} == {
        ("1.0", "split"): 50,
        ("2.0", "split"): 30,
        ("3.0", "split"): 20,
        ("3.0", "explicit"): 1,
    }
    env.plane.traffic.clear_policy("echo")
    assert await env.served(5) == {"1.0": 5}


async def test_sticky_header_keeps_each_key_and_falls_back_without_it(env: Env) -> None:
    env.plane.traffic.set_policy(
        "echo", {"weights": {"1.0": 1, "2.0": 1}, "sticky": {"header": "X-User-Id"}}
    )
    for user in ("alice", "bob", "carol", "dave"):
        assert len(await env.served(5, **{"x-user-id": user})) == 1
    assert len(await env.served(10)) == 2  # no header: the weighted choice


async def test_bad_policy_is_refused_and_the_old_one_stays(env: Env) -> None:
    env.plane.traffic.set_policy("echo", {"weights": {"2.0": 1}})
    with pytest.raises(BadRequest, match=r"^weights\.9: "):
        env.plane.traffic.set_policy("echo", {"weights": {"9": 1}})
    assert await env.served(3) == {"2.0": 3}


async def test_a_version_carrying_traffic_needs_force_to_go(env: Env) -> None:
    env.plane.traffic.set_policy("echo", {"weights": {"1.0": 1, "3.0": 1}})
    with pytest.raises(ForbiddenOperation):
        await env.plane.unregister("echo", "3.0")
    await env.plane.unregister("echo", "2.0")  # no traffic: removable
    await env.plane.unregister("echo", "3.0", force=True)
    assert env.plane.traffic.policy_status("echo")["policy"] is None
    assert await env.served(2) == {"1.0": 2}


async def test_canary_rolls_back_a_failing_candidate(env: Env) -> None:
    env.supervisor.pools["echo_2.0"].respond = _answer("2.0", fail_every=2)
    canary = {
        "candidate": "2.0",
        "baseline": "1.0",
        "steps": [50, 100],
        "window_s": 5,
        "min_requests": 4,
    }
    env.plane.traffic.set_policy("echo", {"canary": canary})
    for i in range(8):
        await env.plane.infer("echo", None, InferenceRequest(f"c{i}"))
    status = env.plane.traffic.policy_status("echo")
    assert status["canary"]["state"] == "rolled_back"
    assert "error rate 0.500" in status["canary"]["reason"]
    assert status["events"][-1]["event"] == "rolled_back"
    assert env.plane.traffic.rollbacks == {("echo", "2.0"): 1}
    assert await env.served(4) == {"1.0": 4}
    assert env.plane.snapshot()["echo"]["1.0"]["traffic"] == {"weights": {"1.0": 100.0}}


async def test_canary_promotes_a_healthy_candidate_to_default(env: Env) -> None:
    canary = {
        "candidate": "2.0",
        "baseline": "1.0",
        "steps": [50, 100],
        "window_s": 5,
        "min_requests": 2,
    }
    env.plane.traffic.set_policy("echo", {"canary": canary})
    assert await env.served(4) == {"1.0": 2, "2.0": 2}
    env.clock.now += 5
    env.plane.traffic.tick()
    assert env.plane.traffic.policy_status("echo")["canary"]["percent"] == 100.0
    assert await env.served(2) == {"2.0": 2}
    env.clock.now += 5
    env.plane.traffic.tick()
    assert env.plane.describe("echo", "2.0")[0].is_default
    assert env.plane.traffic.policy_status("echo")["canary"]["state"] == "promoted"


async def test_shadow_counts_agreement_and_never_answers(env: Env) -> None:
    env.supervisor.pools["echo_3.0"].respond = _answer("1.0")  # agrees with 1.0
    env.plane.traffic.set_policy(
        "echo", {"weights": {"1.0": 1}, "shadow": {"version": "3.0", "fraction": 0.5}}
    )
    assert await env.served(10) == {"1.0": 10}
    await _settle(env)
    shadow = env.plane.traffic.policy_status("echo")["shadow"]["1.0"]
    assert (shadow["mirrored"], shadow["agree"], shadow["disagree"]) == (5, 5, 0)
    env.supervisor.pools["echo_3.0"].respond = _answer("3.0")
    await env.served(2)
    await _settle(env)
    assert env.plane.traffic.policy_status("echo")["shadow"]["1.0"]["disagree"] == 1


async def test_shadow_is_dropped_when_its_queue_is_half_full(env: Env) -> None:
    pool = env.supervisor.pools["echo_3.0"]
    pool.gate = asyncio.Event()  # the shadow's worker never finishes until released
    env.plane.traffic.set_policy("echo", {"shadow": {"version": "3.0"}})
    capacity = env.plane.describe("echo", "3.0")[0].queue_capacity
    assert await env.served(capacity + 5) == {"1.0": capacity + 5}  # primaries all answered
    await asyncio.sleep(0)
    shadow = env.plane.traffic.policy_status("echo")["shadow"]["1.0"]
    assert shadow["dropped"] > 0
    assert shadow["mirrored"] + shadow["dropped"] == capacity + 5
    pool.gate.set()


async def test_models_json_policy_waits_for_its_versions(tmp_path: Path) -> None:
    policy = {"weights": {"1.0": 1, "2.0": 3}}
    env = Env(tmp_path, models={"echo": {"1.0": {"defaultVersion": True, "traffic": policy}}})
    try:
        await env.register("1.0")
        assert env.plane.traffic.policy_status("echo")["pending"] == policy
        await env.register("2.0")
        status = env.plane.traffic.policy_status("echo")
        assert status["policy"] == {"weights": {"1.0": 1.0, "2.0": 3.0}}
        assert status["origin"] == "models"
        assert env.plane.snapshot()["echo"]["1.0"]["traffic"] == status["policy"]
        assert "traffic" not in env.plane.snapshot()["echo"]["2.0"]
    finally:
        await env.plane.close()


async def _settle(env: Env) -> None:
    for _ in range(50):
        counters = env.plane.traffic.policy_status("echo").get("shadow", {}).values()
        if all(c["mirrored"] == c["agree"] + c["disagree"] + c["shadow_errors"] for c in counters):
            return
        await asyncio.sleep(0.01)


async def test_archive_model_config_policy_applies_when_its_versions_exist(tmp_path: Path) -> None:
    env = Env(tmp_path)
    yaml_policy = "traffic:\n  weights:\n    '1.0': 1\n    '2.0': 1\n"
    build_archive(env.store, version="2.0", config_yaml=yaml_policy, file_name="echo-2.0.mar")
    try:
        await env.register("2.0")  # names 1.0, not registered yet: held
        assert env.plane.traffic.policy_status("echo")["policy"] is None
        await env.register("1.0")
        status = env.plane.traffic.policy_status("echo")
        assert status["origin"] == "model-config"
        assert await env.served(4) == {"1.0": 2, "2.0": 2}
    finally:
        await env.plane.close()


def test_models_json_keeps_the_traffic_field() -> None:
    text = '{"echo": {"1.0": {"defaultVersion": true, "traffic": {"weights": {"1.0": 1}}}}}'
    models, unknown = parse_models_json("models", text)
    assert unknown == ()
    assert models["echo"]["1.0"]["traffic"] == {"weights": {"1.0": 1}}


async def test_unregister_serves_the_requests_already_queued(env: Env) -> None:
    pool = env.supervisor.pools["echo_2.0"]
    pool.gate = asyncio.Event()
    calls = [
        asyncio.ensure_future(env.plane.infer("echo", "2.0", InferenceRequest(f"q{i}")))
        for i in range(3)
    ]
    while len(pool.batches) < 1:  # the first runs (gated); the other two wait in the queue
        await asyncio.sleep(0)
    removing = asyncio.ensure_future(env.plane.unregister("echo", "2.0"))
    while "2.0" in env.plane.metadata("echo").versions:
        await asyncio.sleep(0)
    assert not removing.done()
    pool.gate.set()
    results = await asyncio.gather(*calls)
    assert [r.model_version for r in results] == ["2.0"] * 3
    assert (await removing).message == 'Model "echo" unregistered'
    assert pool.closed
