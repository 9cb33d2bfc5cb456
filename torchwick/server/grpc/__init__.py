"""gRPC side of the server: generated stubs for ``protos/`` live in ``_generated``."""
