"""The committed generated code is current, importable as a package, and coexists with
tritonclient, whose own generated code also defines protobuf package ``inference``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from torchwick.server.grpc._generated import grpc_predict_v2_pb2

ROOT = Path(__file__).resolve().parents[3]


def test_committed_generated_code_is_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("tritonclient_first", [True, False])
def test_imports_next_to_tritonclient_grpc(tritonclient_first: bool) -> None:
    """Both import orders work in one interpreter and the messages interoperate on the wire."""
    ours = "from torchwick.server.grpc._generated import grpc_predict_v2_pb2 as ours"
    theirs = "from tritonclient.grpc import service_pb2 as theirs"
    first, second = (theirs, ours) if tritonclient_first else (ours, theirs)
    script = "\n".join(
        [
            first,
            second,
            "req = ours.ModelInferRequest(model_name='m', id='7')",
            "req.raw_input_contents.append(b'abc')",
            "back = theirs.ModelInferRequest.FromString(req.SerializeToString())",
            "assert (back.model_name, back.id, list(back.raw_input_contents)) == "
            "('m', '7', [b'abc'])",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr


def _fields(message: descriptor_pb2.DescriptorProto) -> dict[str, tuple[int, int, int, str]]:
    return {f.name: (f.number, f.type, f.label, f.type_name) for f in message.field}


def test_kserve_v2_is_a_wire_subset_of_triton() -> None:
    """Every KServe v2 method and field exists in Triton's service proto with the same
    number, type and label: tritonclient.grpc speaks to our service unchanged."""
    from tritonclient.grpc import service_pb2

    ours, theirs = descriptor_pb2.FileDescriptorProto(), descriptor_pb2.FileDescriptorProto()
    grpc_predict_v2_pb2.DESCRIPTOR.CopyToProto(ours)
    service_pb2.DESCRIPTOR.CopyToProto(theirs)
    assert ours.package == theirs.package == "inference"

    their_methods = {m.name: m for m in theirs.service[0].method}
    for method in ours.service[0].method:
        other = their_methods[method.name]
        assert (other.input_type, other.output_type) == (method.input_type, method.output_type)
        assert (other.client_streaming, other.server_streaming) == (False, False)

    def index(
        messages: list[descriptor_pb2.DescriptorProto], prefix: str = ""
    ) -> dict[str, descriptor_pb2.DescriptorProto]:
        found = {}
        for m in messages:
            found[prefix + m.name] = m
            found.update(index(list(m.nested_type), f"{prefix}{m.name}."))
        return found

    their_messages = index(list(theirs.message_type))
    for name, message in index(list(ours.message_type)).items():
        their_fields = _fields(their_messages[name])
        for field, facts in _fields(message).items():
            assert their_fields[field] == facts, f"{name}.{field}"
