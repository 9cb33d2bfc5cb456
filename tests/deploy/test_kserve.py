"""The KServe manifests in deploy/kserve/ against KServe's CRD fields and Kubernetes' types."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import KSERVE, validate_kserve

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (dev extra) validates")
pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra) has schemas")


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((KSERVE / name).read_text())
    return document


@pytest.mark.parametrize(
    "name", ["servingruntime.yaml", "servingruntime-grpc.yaml", "inferenceservice.yaml"]
)
def test_manifest_fits_the_schema(name: str) -> None:
    validate_kserve(load(name))


def test_runtime_and_service_fit_together() -> None:
    runtimes = {load(n)["metadata"]["name"]: load(n) for n in ("servingruntime.yaml",)}
    service = load("inferenceservice.yaml")
    model = service["spec"]["predictor"]["model"]
    runtime = runtimes[model["runtime"]]["spec"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["protocolVersions"]
    (main,) = runtime["containers"]
    # KServe mounts storageUri at /mnt/models; the archives sit in its model-store/ folder.
    assert "--model-store=/mnt/models/model-store" in main["args"]
    assert main["ports"][0]["containerPort"] == 8080


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "protocolVersions"), ["v3"]),
        (("spec", "containers", 0, "imagePullPolicy"), 7),
        (("spec", "supportedModelFormat"), [{"name": "pytorch"}]),
        (("spec", "containers", 0, "ports", 0, "containerPort"), "8080"),
    ],
)
def test_schema_rejects_a_broken_runtime(path: tuple[Any, ...], value: Any) -> None:
    document = copy.deepcopy(load("servingruntime.yaml"))
    target: Any = document
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate_kserve(document)
