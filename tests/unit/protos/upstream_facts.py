"""Wire facts of the upstream protos, derived from protoc descriptor sets of the files.

Sources: TorchServe v0.12.0 ``frontend/server/src/main/resources/proto/inference.proto`` and
``management.proto``; KServe ``docs/predict-api/v2/grpc_predict_v2.proto``. Stored as data so
that the wire-compatibility test needs no network.
"""

from __future__ import annotations

from dataclasses import dataclass

#: method -> (input type, output type, client_streaming, server_streaming)
Methods = dict[str, tuple[str, str, bool, bool]]
#: field -> (number, type, label, type_name, oneof name or "")
Fields = dict[str, tuple[int, str, str, str, str]]


@dataclass(frozen=True)
class FileFacts:
    package: str
    dependencies: tuple[str, ...]
    options: str
    services: dict[str, Methods]
    messages: dict[str, Fields]


UPSTREAM: dict[str, FileFacts] = {
    "inference.proto": FileFacts(
        package="org.pytorch.serve.grpc.inference",
        dependencies=("google/protobuf/empty.proto", "google/rpc/status.proto"),
        options="java_multiple_files: true",
        services={
            "InferenceAPIsService": {
                "Ping": (
                    "google.protobuf.Empty",
                    "org.pytorch.serve.grpc.inference.TorchServeHealthResponse",
                    False,
                    False,
                ),
                "Predictions": (
                    "org.pytorch.serve.grpc.inference.PredictionsRequest",
                    "org.pytorch.serve.grpc.inference.PredictionResponse",
                    False,
                    False,
                ),
                "StreamPredictions": (
                    "org.pytorch.serve.grpc.inference.PredictionsRequest",
                    "org.pytorch.serve.grpc.inference.PredictionResponse",
                    False,
                    True,
                ),
                "StreamPredictions2": (
                    "org.pytorch.serve.grpc.inference.PredictionsRequest",
                    "org.pytorch.serve.grpc.inference.PredictionResponse",
                    True,
                    True,
                ),
            },
        },
        messages={
            "org.pytorch.serve.grpc.inference.PredictionsRequest": {
                "model_name": (1, "STRING", "OPTIONAL", "", ""),
                "model_version": (2, "STRING", "OPTIONAL", "", ""),
                "input": (
                    3,
                    "MESSAGE",
                    "REPEATED",
                    "org.pytorch.serve.grpc.inference.PredictionsRequest.InputEntry",
                    "",
                ),
                "sequence_id": (4, "STRING", "OPTIONAL", "", "_sequence_id"),
            },
            "org.pytorch.serve.grpc.inference.PredictionsRequest.InputEntry": {
                "key": (1, "STRING", "OPTIONAL", "", ""),
                "value": (2, "BYTES", "OPTIONAL", "", ""),
            },
            "org.pytorch.serve.grpc.inference.PredictionResponse": {
                "prediction": (1, "BYTES", "OPTIONAL", "", ""),
                "sequence_id": (2, "STRING", "OPTIONAL", "", "_sequence_id"),
                "status": (3, "MESSAGE", "OPTIONAL", "google.rpc.Status", "_status"),
            },
            "org.pytorch.serve.grpc.inference.TorchServeHealthResponse": {
                "health": (1, "STRING", "OPTIONAL", "", ""),
            },
        },
    ),
    "management.proto": FileFacts(
        package="org.pytorch.serve.grpc.management",
        dependencies=(),
        options="java_multiple_files: true",
        services={
            "ManagementAPIsService": {
                "DescribeModel": (
                    "org.pytorch.serve.grpc.management.DescribeModelRequest",
                    "org.pytorch.serve.grpc.management.ManagementResponse",
                    False,
                    False,
                ),
                "ListModels": (
                    "org.pytorch.serve.grpc.management.ListModelsRequest",
                    "org.pytorch.serve.grpc.management.ManagementResponse",
                    False,
                    False,
                ),
                "RegisterModel": (
                    "org.pytorch.serve.grpc.management.RegisterModelRequest",
                    "org.pytorch.serve.grpc.management.ManagementResponse",
                    False,
                    False,
                ),
                "ScaleWorker": (
                    "org.pytorch.serve.grpc.management.ScaleWorkerRequest",
                    "org.pytorch.serve.grpc.management.ManagementResponse",
                    False,
                    False,
                ),
                "SetDefault": (
                    "org.pytorch.serve.grpc.management.SetDefaultRequest",
                    "org.pytorch.serve.grpc.management.ManagementResponse",
                    False,
                    False,
                ),
                "UnregisterModel": (
                    "org.pytorch.serve.grpc.management.UnregisterModelRequest",
                    "org.pytorch.serve.grpc.management.ManagementResponse",
                    False,
                    False,
                ),
            },
        },
        messages={
            "org.pytorch.serve.grpc.management.ManagementResponse": {
                "msg": (1, "STRING", "OPTIONAL", "", ""),
            },
            "org.pytorch.serve.grpc.management.DescribeModelRequest": {
                "model_name": (1, "STRING", "OPTIONAL", "", ""),
                "model_version": (2, "STRING", "OPTIONAL", "", ""),
                "customized": (3, "BOOL", "OPTIONAL", "", ""),
            },
            "org.pytorch.serve.grpc.management.ListModelsRequest": {
                "limit": (1, "INT32", "OPTIONAL", "", ""),
                "next_page_token": (2, "INT32", "OPTIONAL", "", ""),
            },
            "org.pytorch.serve.grpc.management.RegisterModelRequest": {
                "batch_size": (1, "INT32", "OPTIONAL", "", ""),
                "handler": (2, "STRING", "OPTIONAL", "", ""),
                "initial_workers": (3, "INT32", "OPTIONAL", "", ""),
                "max_batch_delay": (4, "INT32", "OPTIONAL", "", ""),
                "model_name": (5, "STRING", "OPTIONAL", "", ""),
                "response_timeout": (6, "INT32", "OPTIONAL", "", ""),
                "runtime": (7, "STRING", "OPTIONAL", "", ""),
                "synchronous": (8, "BOOL", "OPTIONAL", "", ""),
                "url": (9, "STRING", "OPTIONAL", "", ""),
                "s3_sse_kms": (10, "BOOL", "OPTIONAL", "", ""),
                "startup_timeout": (11, "INT32", "OPTIONAL", "", ""),
            },
            "org.pytorch.serve.grpc.management.ScaleWorkerRequest": {
                "model_name": (1, "STRING", "OPTIONAL", "", ""),
                "model_version": (2, "STRING", "OPTIONAL", "", ""),
                "max_worker": (3, "INT32", "OPTIONAL", "", ""),
                "min_worker": (4, "INT32", "OPTIONAL", "", ""),
                "number_gpu": (5, "INT32", "OPTIONAL", "", ""),
                "synchronous": (6, "BOOL", "OPTIONAL", "", ""),
                "timeout": (7, "INT32", "OPTIONAL", "", ""),
            },
            "org.pytorch.serve.grpc.management.SetDefaultRequest": {
                "model_name": (1, "STRING", "OPTIONAL", "", ""),
                "model_version": (2, "STRING", "OPTIONAL", "", ""),
            },
            "org.pytorch.serve.grpc.management.UnregisterModelRequest": {
                "model_name": (1, "STRING", "OPTIONAL", "", ""),
                "model_version": (2, "STRING", "OPTIONAL", "", ""),
            },
        },
    ),
    "grpc_predict_v2.proto": FileFacts(
        package="inference",
        dependencies=(),
        options="",
        services={
            "GRPCInferenceService": {
                "ServerLive": (
                    "inference.ServerLiveRequest",
                    "inference.ServerLiveResponse",
                    False,
                    False,
                ),
                "ServerReady": (
                    "inference.ServerReadyRequest",
                    "inference.ServerReadyResponse",
                    False,
                    False,
                ),
                "ModelReady": (
                    "inference.ModelReadyRequest",
                    "inference.ModelReadyResponse",
                    False,
                    False,
                ),
                "ServerMetadata": (
                    "inference.ServerMetadataRequest",
                    "inference.ServerMetadataResponse",
                    False,
                    False,
                ),
                "ModelMetadata": (
                    "inference.ModelMetadataRequest",
                    "inference.ModelMetadataResponse",
                    False,
                    False,
                ),
                "ModelInfer": (
                    "inference.ModelInferRequest",
                    "inference.ModelInferResponse",
                    False,
                    False,
                ),
            },
        },
        messages={
            "inference.ServerLiveRequest": {},
            "inference.ServerLiveResponse": {
                "live": (1, "BOOL", "OPTIONAL", "", ""),
            },
            "inference.ServerReadyRequest": {},
            "inference.ServerReadyResponse": {
                "ready": (1, "BOOL", "OPTIONAL", "", ""),
            },
            "inference.ModelReadyRequest": {
                "name": (1, "STRING", "OPTIONAL", "", ""),
                "version": (2, "STRING", "OPTIONAL", "", ""),
            },
            "inference.ModelReadyResponse": {
                "ready": (1, "BOOL", "OPTIONAL", "", ""),
            },
            "inference.ServerMetadataRequest": {},
            "inference.ServerMetadataResponse": {
                "name": (1, "STRING", "OPTIONAL", "", ""),
                "version": (2, "STRING", "OPTIONAL", "", ""),
                "extensions": (3, "STRING", "REPEATED", "", ""),
            },
            "inference.ModelMetadataRequest": {
                "name": (1, "STRING", "OPTIONAL", "", ""),
                "version": (2, "STRING", "OPTIONAL", "", ""),
            },
            "inference.ModelMetadataResponse": {
                "name": (1, "STRING", "OPTIONAL", "", ""),
                "versions": (2, "STRING", "REPEATED", "", ""),
                "platform": (3, "STRING", "OPTIONAL", "", ""),
                "inputs": (
                    4,
                    "MESSAGE",
                    "REPEATED",
                    "inference.ModelMetadataResponse.TensorMetadata",
                    "",
                ),
                "outputs": (
                    5,
                    "MESSAGE",
                    "REPEATED",
                    "inference.ModelMetadataResponse.TensorMetadata",
                    "",
                ),
            },
            "inference.ModelMetadataResponse.TensorMetadata": {
                "name": (1, "STRING", "OPTIONAL", "", ""),
                "datatype": (2, "STRING", "OPTIONAL", "", ""),
                "shape": (3, "INT64", "REPEATED", "", ""),
            },
            "inference.ModelInferRequest": {
                "model_name": (1, "STRING", "OPTIONAL", "", ""),
                "model_version": (2, "STRING", "OPTIONAL", "", ""),
                "id": (3, "STRING", "OPTIONAL", "", ""),
                "parameters": (
                    4,
                    "MESSAGE",
                    "REPEATED",
                    "inference.ModelInferRequest.ParametersEntry",
                    "",
                ),
                "inputs": (
                    5,
                    "MESSAGE",
                    "REPEATED",
                    "inference.ModelInferRequest.InferInputTensor",
                    "",
                ),
                "outputs": (
                    6,
                    "MESSAGE",
                    "REPEATED",
                    "inference.ModelInferRequest.InferRequestedOutputTensor",
                    "",
                ),
                "raw_input_contents": (7, "BYTES", "REPEATED", "", ""),
            },
            "inference.ModelInferRequest.InferInputTensor": {
                "name": (1, "STRING", "OPTIONAL", "", ""),
                "datatype": (2, "STRING", "OPTIONAL", "", ""),
                "shape": (3, "INT64", "REPEATED", "", ""),
                "parameters": (
                    4,
                    "MESSAGE",
                    "REPEATED",
                    "inference.ModelInferRequest.InferInputTensor.ParametersEntry",
                    "",
                ),
                "contents": (5, "MESSAGE", "OPTIONAL", "inference.InferTensorContents", ""),
            },
            "inference.ModelInferRequest.InferInputTensor.ParametersEntry": {
                "key": (1, "STRING", "OPTIONAL", "", ""),
                "value": (2, "MESSAGE", "OPTIONAL", "inference.InferParameter", ""),
            },
            "inference.ModelInferRequest.InferRequestedOutputTensor": {
                "name": (1, "STRING", "OPTIONAL", "", ""),
                "parameters": (
                    2,
                    "MESSAGE",
                    "REPEATED",
                    "inference.ModelInferRequest.InferRequestedOutputTensor.ParametersEntry",
                    "",
                ),
            },
            "inference.ModelInferRequest.InferRequestedOutputTensor.ParametersEntry": {
                "key": (1, "STRING", "OPTIONAL", "", ""),
                "value": (2, "MESSAGE", "OPTIONAL", "inference.InferParameter", ""),
            },
            "inference.ModelInferRequest.ParametersEntry": {
                "key": (1, "STRING", "OPTIONAL", "", ""),
                "value": (2, "MESSAGE", "OPTIONAL", "inference.InferParameter", ""),
            },
            "inference.ModelInferResponse": {
                "model_name": (1, "STRING", "OPTIONAL", "", ""),
                "model_version": (2, "STRING", "OPTIONAL", "", ""),
                "id": (3, "STRING", "OPTIONAL", "", ""),
                "parameters": (
                    4,
                    "MESSAGE",
                    "REPEATED",
                    "inference.ModelInferResponse.ParametersEntry",
                    "",
                ),
                "outputs": (
                    5,
                    "MESSAGE",
                    "REPEATED",
                    "inference.ModelInferResponse.InferOutputTensor",
                    "",
                ),
                "raw_output_contents": (6, "BYTES", "REPEATED", "", ""),
            },
            "inference.ModelInferResponse.InferOutputTensor": {
                "name": (1, "STRING", "OPTIONAL", "", ""),
                "datatype": (2, "STRING", "OPTIONAL", "", ""),
                "shape": (3, "INT64", "REPEATED", "", ""),
                "parameters": (
                    4,
                    "MESSAGE",
                    "REPEATED",
                    "inference.ModelInferResponse.InferOutputTensor.ParametersEntry",
                    "",
                ),
                "contents": (5, "MESSAGE", "OPTIONAL", "inference.InferTensorContents", ""),
            },
            "inference.ModelInferResponse.InferOutputTensor.ParametersEntry": {
                "key": (1, "STRING", "OPTIONAL", "", ""),
                "value": (2, "MESSAGE", "OPTIONAL", "inference.InferParameter", ""),
            },
            "inference.ModelInferResponse.ParametersEntry": {
                "key": (1, "STRING", "OPTIONAL", "", ""),
                "value": (2, "MESSAGE", "OPTIONAL", "inference.InferParameter", ""),
            },
            "inference.InferParameter": {
                "bool_param": (1, "BOOL", "OPTIONAL", "", "parameter_choice"),
                "int64_param": (2, "INT64", "OPTIONAL", "", "parameter_choice"),
                "string_param": (3, "STRING", "OPTIONAL", "", "parameter_choice"),
            },
            "inference.InferTensorContents": {
                "bool_contents": (1, "BOOL", "REPEATED", "", ""),
                "int_contents": (2, "INT32", "REPEATED", "", ""),
                "int64_contents": (3, "INT64", "REPEATED", "", ""),
                "uint_contents": (4, "UINT32", "REPEATED", "", ""),
                "uint64_contents": (5, "UINT64", "REPEATED", "", ""),
                "fp32_contents": (6, "FLOAT", "REPEATED", "", ""),
                "fp64_contents": (7, "DOUBLE", "REPEATED", "", ""),
                "bytes_contents": (8, "BYTES", "REPEATED", "", ""),
            },
        },
    ),
}
