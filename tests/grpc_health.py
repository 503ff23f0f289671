"""A gRPC server on loopback with the standard health service (grpc.health.v1), for the gRPC checks registrar runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any


@contextlib.contextmanager
def health_server(serving: bool = True) -> Iterator[tuple[int, Any]]:
    """(its port on 127.0.0.1, the HealthServicer to ``set``); the overall service "" SERVING if ``serving``."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    if serving:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(0)
