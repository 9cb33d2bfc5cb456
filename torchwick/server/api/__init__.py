"""The REST adapters (inference, management, metrics) and their raw-ASGI toolkit.

Thin by design: parse, authenticate, call the data plane, map errors through ``ERROR_TABLE``.
``assembly.RestApis`` puts them together per listener; ``serving`` runs them under uvicorn.
"""
