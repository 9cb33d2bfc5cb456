"""The generated descriptors carry exactly the upstream wire facts.

``UPSTREAM`` (upstream_facts.py) holds the facts of the upstream files; any drift in a name,
number, type, label, oneof, option, dependency or streaming shape of ``protos/*.proto``
fails this test.
"""

from __future__ import annotations

from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2

from tests.unit.protos.upstream_facts import UPSTREAM, Fields, FileFacts
from torchwick.server.grpc._generated import grpc_predict_v2_pb2, inference_pb2, management_pb2

_TYPES = {v: k for k, v in descriptor_pb2.FieldDescriptorProto.Type.items()}
_LABELS = {v: k for k, v in descriptor_pb2.FieldDescriptorProto.Label.items()}


def _messages(prefix: str, messages: list[descriptor_pb2.DescriptorProto]) -> dict[str, Fields]:
    found: dict[str, Fields] = {}
    for message in messages:
        full = f"{prefix}.{message.name}"
        fields: Fields = {}
        for field in message.field:
            oneof = (
                message.oneof_decl[field.oneof_index].name if field.HasField("oneof_index") else ""
            )
            fields[field.name] = (
                field.number,
                _TYPES[field.type].removeprefix("TYPE_"),
                _LABELS[field.label].removeprefix("LABEL_"),
                field.type_name.lstrip("."),
                oneof,
            )
        found[full] = fields
        found.update(_messages(full, list(message.nested_type)))
    return found


def facts_of(module: ModuleType) -> FileFacts:
    """The wire facts of a generated module, read back from its file descriptor."""
    proto = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(proto)
    return FileFacts(
        package=proto.package,
        dependencies=tuple(proto.dependency),
        options=str(proto.options).strip(),
        services={
            service.name: {
                m.name: (
                    m.input_type.lstrip("."),
                    m.output_type.lstrip("."),
                    m.client_streaming,
                    m.server_streaming,
                )
                for m in service.method
            }
            for service in proto.service
        },
        messages=_messages(proto.package, list(proto.message_type)),
    )


MODULES = {
    "inference.proto": inference_pb2,
    "management.proto": management_pb2,
    "grpc_predict_v2.proto": grpc_predict_v2_pb2,
}


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_generated_descriptor_matches_upstream(name: str) -> None:
    module = MODULES[name]
    assert module.DESCRIPTOR.name == name
    got = facts_of(module)
    want = UPSTREAM[name]
    # Compare piecewise first so a failure names the message that drifted.
    assert got.package == want.package
    assert got.dependencies == want.dependencies
    assert got.options == want.options
    assert got.services == want.services
    assert sorted(got.messages) == sorted(want.messages)
    for message, fields in want.messages.items():
        assert got.messages[message] == fields, message
    assert list(got.messages[m] for m in want.messages) == list(want.messages.values())


def test_service_method_paths() -> None:
    """The HTTP/2 paths clients call: /<package>.<Service>/<Method>."""
    paths = {
        f"/{method.containing_service.full_name}/{method.name}"
        for module in MODULES.values()
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert paths == {
        "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Ping",
        "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions",
        "/org.pytorch.serve.grpc.inference.InferenceAPIsService/StreamPredictions",
        "/org.pytorch.serve.grpc.inference.InferenceAPIsService/StreamPredictions2",
        "/org.pytorch.serve.grpc.management.ManagementAPIsService/DescribeModel",
        "/org.pytorch.serve.grpc.management.ManagementAPIsService/ListModels",
        "/org.pytorch.serve.grpc.management.ManagementAPIsService/RegisterModel",
        "/org.pytorch.serve.grpc.management.ManagementAPIsService/ScaleWorker",
        "/org.pytorch.serve.grpc.management.ManagementAPIsService/SetDefault",
        "/org.pytorch.serve.grpc.management.ManagementAPIsService/UnregisterModel",
        "/inference.GRPCInferenceService/ServerLive",
        "/inference.GRPCInferenceService/ServerReady",
        "/inference.GRPCInferenceService/ModelReady",
        "/inference.GRPCInferenceService/ServerMetadata",
        "/inference.GRPCInferenceService/ModelMetadata",
        "/inference.GRPCInferenceService/ModelInfer",
    }
