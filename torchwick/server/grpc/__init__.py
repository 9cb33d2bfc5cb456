"""gRPC side of the server: TorchServe's inference and management APIs (``server.py``),
with generated stubs for ``protos/`` in ``_generated``.

gRPC's fork handlers are switched off before ``grpc`` is first imported (unless the
environment says otherwise): the server forks only to exec worker processes, which never use
gRPC, and with the handlers on every worker start logs "skipping fork() handlers".
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
