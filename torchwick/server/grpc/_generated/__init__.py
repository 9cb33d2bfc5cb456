"""Generated protobuf and gRPC modules for ``protos/*.proto``; do not edit.

Regenerate with ``python scripts/gen_protos.py`` (see protos/README.md). The KServe v2
messages (``grpc_predict_v2_pb2``) live in the private descriptor pool
``grpc_predict_v2_pb2.POOL`` so that they can be imported next to tritonclient or kserve.
"""
