"""One model server, as the serving control plane starts it: MLServer on Unix sockets.

`mlserver start` listens on TCP ports that any local process can reach, and MLServer's API
there includes the model repository's `load` and `unload`: anyone on the machine could unload a
version (an outage the supervisor does not see) or load one from disk unverified. Here the REST
and gRPC servers listen on Unix sockets in a folder only this user can enter, so only Envoy
and the control plane reach a model server; only its metrics port (read-only, for Prometheus)
stays on 127.0.0.1. Runs in the serving environment (`deploy/serving/.venv`):

    python -m shipway.serving.model_server <bundle folder>

with `SHIPWAY_HTTP_SOCKET` and `SHIPWAY_GRPC_SOCKET` naming the sockets, and MLServer's own
settings (`MLSERVER_METRICS_PORT`, ...) in the environment as for `mlserver start`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from grpc import aio
from mlserver.cli.serve import load_settings
from mlserver.grpc import server as grpc_server
from mlserver.server import MLServer

HTTP_SOCKET_ENV = "SHIPWAY_HTTP_SOCKET"
GRPC_SOCKET_ENV = "SHIPWAY_GRPC_SOCKET"


class _UnixSocketGrpc:
    """`grpc.aio` as MLServer's gRPC server sees it: its one port becomes a Unix socket."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def server(self, *args: Any, **kwargs: Any) -> aio.Server:
        made = aio.server(*args, **kwargs)
        bind = made.add_insecure_port

        def add_insecure_port(address: str) -> int:
            return bind(f"unix:{self.socket}")

        made.add_insecure_port = add_insecure_port
        return made


async def serve(folder: str, http_socket: str, grpc_socket: str) -> None:
    settings, models = await load_settings(folder)
    # MLServer hands these to uvicorn (`uds`): the REST server binds the socket, not a port.
    settings._custom_rest_server_settings = {"uds": http_socket}
    grpc_server.aio = _UnixSocketGrpc(grpc_socket)
    server = MLServer(settings)
    await server.start(models)


def main() -> None:
    asyncio.run(serve(sys.argv[1], os.environ[HTTP_SOCKET_ENV], os.environ[GRPC_SOCKET_ENV]))


if __name__ == "__main__":
    main()
