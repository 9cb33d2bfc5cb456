"""The Helm chart: lint, render with Helm, validate every object against Kubernetes' schemas,
and check what the Deployment promises (probes, GPU, secret, security context)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.manifests import CHART, KUBE_VERSIONS, by_kind, render, validate_kubernetes
from torchwick.server.config.keys import KEYS
from torchwick.server.config.properties import parse_properties
from torchwick.server.security.tokens import read_token_file

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) renders the chart")
pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra) has schemas")

EVERYTHING: dict[str, Any] = {
    "grpc": {"enabled": True},
    "gpu": {"count": 2},
    "probes": {"protocol": "oip"},
    "modelStore": {
        "source": "initContainer",
        "initContainer": {"args": ["cp /seed/*.mar /home/model-server/model-store/"]},
    },
    "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
    "autoscaling": {
        "enabled": True,
        "podsMetric": {"name": "ts_queue_latency_per_second", "averageValue": "100000"},
    },
    "podDisruptionBudget": {"enabled": True},
    "auth": {"inferenceKey": "inference-key-0123456789abcdef"},
    "config": {"default_workers_per_model": 2},
}


def container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(documents, "Deployment")
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    (main,) = [c for c in spec["containers"] if c["name"] == "torchwick"]
    found: dict[str, Any] = main
    return found


def test_lint_is_clean() -> None:
    report = helm.lint(str(CHART), strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems, problems
    assert not report["errors"]


@pytest.mark.parametrize("values", [{}, EVERYTHING], ids=["defaults", "everything"])
@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_object_fits_the_kubernetes_schema(values: dict[str, Any], version: str) -> None:
    documents = render(values)
    prometheus = {"ServiceMonitor", "PodMonitor"}
    for document in documents:
        if document["kind"] in prometheus:
            assert document["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        validate_kubernetes(document, version)


def test_defaults_probe_ping_with_auth_on_and_model_api_off() -> None:
    documents = render()
    main = container(documents)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["httpGet"] == {"path": "/ping", "port": "inference"}
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "TORCHWICK_TOKEN_FILE", "value": "/var/run/secrets/torchwick/tokens.json"} in (
        main["env"]
    )
    assert "nvidia.com/gpu" not in main["resources"].get("limits", {})
    (config_map,) = by_kind(documents, "ConfigMap")
    properties = parse_properties(config_map["data"]["config.properties"], source="chart")
    assert properties["disable_token_authorization"] == "false"
    assert properties["enable_model_api"] == "false"
    assert properties["inference_address"] == "http://0.0.0.0:8080"
    # Every key the chart writes is one torchwick reads, and its value converts.
    for key, value in properties.items():
        KEYS[key].convert(key, value, Path("/"))
    assert {s["metadata"]["name"] for s in by_kind(documents, "Service")} == {
        "demo-torchwick-inference",
        "demo-torchwick-management",
        "demo-torchwick-metrics",
    }
    (claim,) = by_kind(documents, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == "demo-torchwick-model-store"


def test_secret_holds_a_token_file_torchwick_accepts(tmp_path: Path) -> None:
    documents = render(EVERYTHING)
    (secret,) = by_kind(documents, "Secret")
    tokens = base64.b64decode(secret["data"]["tokens.json"])
    assert json.loads(tokens)["inference"] == "inference-key-0123456789abcdef"
    path = tmp_path / "tokens.json"
    path.write_bytes(tokens)
    read_token_file(path)


def test_everything_renders_gpu_grpc_oip_monitors_hpa_and_pdb() -> None:
    documents = render(EVERYTHING)
    main = container(documents)
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert main["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert main["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {p["containerPort"] for p in main["ports"]} == {8080, 8081, 8082, 7070, 7071}
    (deployment,) = by_kind(documents, "Deployment")
    assert "replicas" not in deployment["spec"]
    assert deployment["spec"]["template"]["spec"]["initContainers"][0]["name"] == "fetch-models"
    (hpa,) = by_kind(documents, "HorizontalPodAutoscaler")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "Pods"]
    assert by_kind(documents, "PodDisruptionBudget")[0]["spec"]["minAvailable"] == 1
    (monitor,) = by_kind(documents, "ServiceMonitor")
    (metrics_service,) = [
        s for s in by_kind(documents, "Service") if s["metadata"]["name"].endswith("-metrics")
    ]
    labels = metrics_service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert by_kind(documents, "PersistentVolumeClaim") == []
    (config_map,) = by_kind(documents, "ConfigMap")
    assert "default_workers_per_model=2" in config_map["data"]["config.properties"]


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"gpu": {"count": -1}}, "/gpu/count"),
        ({"gpu": {"count": "two"}}, "/gpu/count"),
        ({"probes": {"protocol": "grpc"}}, "/probes/protocol"),
        ({"auth": {"inferenceKey": "short"}}, "/auth/inferenceKey"),
        ({"config": {"enable_model_api": True}}, "enable_model_api"),
        ({"replicas": 2}, "replicas"),
    ],
)
def test_bad_values_fail_the_schema_naming_the_field(values: dict[str, Any], field: str) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(values)
    assert field in str(caught.value)
    with pytest.raises(helm.HelmValuesError):
        render(values)
