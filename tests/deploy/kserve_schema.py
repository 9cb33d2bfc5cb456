"""A minimal JSON Schema for the KServe resources in deploy/kserve/, written for these tests.

No package on the registries ships KServe's CRDs, so this schema was written by hand from the
``openAPIV3Schema`` of KServe's CRDs (``serving.kserve.io_servingruntimes.yaml``, storage
version v1alpha1, and ``serving.kserve.io_inferenceservices.yaml``, v1beta1): the property
names of each object our manifests use, their types, required fields and enums. It is stricter
than the CRDs in one way: unknown properties are errors (the API server would silently prune
them, which hides typos). Kubernetes types inside (Container, Volume, ResourceRequirements,
EnvVar, ...) are checked against kubernetes-validate's Kubernetes schemas by ``$ref``.
"""

from __future__ import annotations

from typing import Any

#: kubernetes-validate's definitions, by their own ``$id``.
DEFINITIONS = "https://kubernetes.io/api/_definitions.json"
K8S = DEFINITIONS + "#/$defs/io.k8s.api.core.v1."

#: KServe's protocol constants (v1, v2 and their gRPC forms).
PROTOCOLS = ["v1", "v2", "grpc-v1", "grpc-v2"]

_STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA: dict[str, Any] = {
    "$ref": DEFINITIONS + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": K8S + name}


def _array_of(name: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(name)}


def _resource(kind: str, api_version: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
    }


_MODEL_FORMAT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "autoSelect": {"type": "boolean"},
        "priority": {"type": "integer", "minimum": 1},
    },
}

SERVING_RUNTIME = _resource(
    "ServingRuntime",
    "serving.kserve.io/v1alpha1",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["containers"],
        "properties": {
            "affinity": _ref("Affinity"),
            "annotations": _STRING_MAP,
            "containers": {**_array_of("Container"), "minItems": 1},
            "disabled": {"type": "boolean"},
            "grpcDataEndpoint": {"type": "string"},
            "grpcEndpoint": {"type": "string"},
            "httpDataEndpoint": {"type": "string"},
            "imagePullSecrets": _array_of("LocalObjectReference"),
            "labels": _STRING_MAP,
            "multiModel": {"type": "boolean"},
            "nodeSelector": _STRING_MAP,
            "protocolVersions": {"type": "array", "items": {"enum": PROTOCOLS}},
            "replicas": {"type": "integer"},
            "schedulerName": {"type": "string"},
            "supportedModelFormats": {"type": "array", "items": _MODEL_FORMAT},
            "tolerations": _array_of("Toleration"),
            "volumes": _array_of("Volume"),
        },
    },
)

_MODEL = {
    "type": "object",
    "additionalProperties": False,
    "required": ["modelFormat"],
    "properties": {
        "modelFormat": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
        },
        "runtime": {"type": "string"},
        "runtimeVersion": {"type": "string"},
        "protocolVersion": {"enum": PROTOCOLS},
        "storageUri": {"type": "string", "pattern": "^[a-z0-9+.-]+://.+"},
        "args": {"type": "array", "items": {"type": "string"}},
        "command": {"type": "array", "items": {"type": "string"}},
        "env": _array_of("EnvVar"),
        "image": {"type": "string"},
        "resources": _ref("ResourceRequirements"),
        "volumeMounts": _array_of("VolumeMount"),
        "securityContext": _ref("SecurityContext"),
    },
}

INFERENCE_SERVICE = _resource(
    "InferenceService",
    "serving.kserve.io/v1beta1",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["predictor"],
        "properties": {
            "predictor": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "model": _MODEL,
                    "minReplicas": {"type": "integer", "minimum": 0},
                    "maxReplicas": {"type": "integer", "minimum": 0},
                    "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
                    "scaleTarget": {"type": "integer"},
                    "serviceAccountName": {"type": "string"},
                    "nodeSelector": _STRING_MAP,
                    "tolerations": _array_of("Toleration"),
                    "volumes": _array_of("Volume"),
                    "timeout": {"type": "integer"},
                },
            }
        },
    },
)

SCHEMAS = {"ServingRuntime": SERVING_RUNTIME, "InferenceService": INFERENCE_SERVICE}
