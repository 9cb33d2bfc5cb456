"""Rendering the Helm chart and checking manifests against Kubernetes and KServe schemas.

The chart is rendered by Helm itself (Helm v4's Go SDK through ``helm-python-sdk``, no
cluster needed); Kubernetes objects are validated with ``kubernetes-validate``'s strict
schemas; KServe objects with ``tests.deploy.kserve_schema``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "torchwick"
KSERVE = REPO / "deploy" / "kserve"
#: The oldest Kubernetes the chart claims (Chart.yaml kubeVersion) and a recent one.
KUBE_VERSIONS = ("1.25.0", "1.33.0")


def render(values: dict[str, Any] | None = None, name: str = "demo") -> list[dict[str, Any]]:
    """The chart's manifests for ``values`` (schema-checked by Helm), as parsed documents."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values or {}, name=name, namespace="ml", is_install=True)
    documents: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".txt"):
            continue
        documents += [doc for doc in yaml.safe_load_all(text) if doc]
    return documents


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == kind]


def validate_kubernetes(document: dict[str, Any], version: str) -> None:
    """Raise ``kubernetes_validate.ValidationError`` unless ``document`` fits the schema."""
    import kubernetes_validate

    kubernetes_validate.validate(document, version, strict=True)


def validate_kserve(document: dict[str, Any], version: str = KUBE_VERSIONS[-1]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``document`` fits the KServe schema."""
    import jsonschema
    from referencing import Registry, Resource

    from tests.deploy.kserve_schema import SCHEMAS

    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    definitions = json.loads(
        (folder / f"v{version}-local-strict" / "_definitions.json").read_text()
    )
    registry: Registry[Any] = Resource.from_contents(definitions) @ Registry()
    schema = SCHEMAS[document["kind"]]
    jsonschema.Draft202012Validator(schema, registry=registry).validate(document)
