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

A stop is taken once. The control plane's replicas share its process group, so a Ctrl-C (or
a supervisor's signal to the group) reaches each of them, and then the control plane signals
each again as it stops them. MLServer stopped on every signal, and uvicorn, which since 0.29
captures signals itself (MLServer's `_NoSignalServer` only overrides the older hook), re-raised
them after its own shutdown: a second SIGINT made uvicorn skip its lifespan shutdown, and one
raised late interrupted the prediction spool's last write at exit, losing every row queued
since its last flush. Here the first SIGINT or SIGTERM stops the servers gracefully, a repeat
within `SAME_STOP_SECONDS` is the same request, and a later one (whoever stops us is out of
patience) stops at once; either way the spool writes what it holds before the process ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from typing import Any

from grpc import aio
from mlserver.cli.serve import load_settings
from mlserver.grpc import server as grpc_server
from mlserver.metrics import server as metrics_server
from mlserver.rest import server as rest_server
from mlserver.server import MLServer

from shipway.serving.prediction_spool import close_all

# Under MLServer's logger, so these lines go where its own do.
log = logging.getLogger("mlserver.shipway")

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


HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
SAME_STOP_SECONDS = 2.0


class _StopOnce:
    """The model server's signal handler: see the module's docstring."""

    def __init__(self, server: MLServer) -> None:
        self.server = server
        self.first: float | None = None
        # Held: the event loop keeps only a weak reference to a task.
        self.stopping: asyncio.Task[None] | None = None

    def __call__(self, sig: signal.Signals) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
            log.info("%s: stopping gracefully", sig.name)
            self.stopping = asyncio.get_running_loop().create_task(self.server.stop(sig))
        elif now - self.first < SAME_STOP_SECONDS:
            log.info("%s again: the stop already under way", sig.name)
        else:
            log.warning(
                "%s again, %.1f s into a graceful stop: writing the prediction spool and "
                "stopping now",
                sig.name,
                now - self.first,
            )
            close_all()
            os._exit(128 + sig)


def _leave_signals_alone(self: Any) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


async def serve(folder: str, http_socket: str, grpc_socket: str) -> None:
    settings, models = await load_settings(folder)
    # MLServer hands these to uvicorn (`uds`): the REST server binds the socket, not a port.
    settings._custom_rest_server_settings = {"uds": http_socket}
    grpc_server.aio = _UnixSocketGrpc(grpc_socket)
    for uvicorn_server in (rest_server._NoSignalServer, metrics_server._NoSignalServer):
        uvicorn_server.capture_signals = _leave_signals_alone
    server = MLServer(settings)
    loop = asyncio.get_running_loop()
    stop = _StopOnce(server)
    for sig in HANDLED_SIGNALS:
        loop.add_signal_handler(sig, stop, sig)  # in place of MLServer's own
    try:
        await server.start(models)
    finally:
        close_all()


def main() -> None:
    asyncio.run(serve(sys.argv[1], os.environ[HTTP_SOCKET_ENV], os.environ[GRPC_SOCKET_ENV]))


if __name__ == "__main__":
    main()
