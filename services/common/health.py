"""The standard gRPC health service, driven by the server's lifecycle.

Kubernetes probes and load balancers read it: the overall status ("") and each service's
status say NOT_SERVING until the model is loaded and warmed up (so no traffic reaches a cold
replica), SERVING after, and NOT_SERVING for good once draining starts (so traffic moves
elsewhere before the process stops).
"""

from __future__ import annotations

from collections.abc import Sequence

from grpc_health.v1 import health, health_pb2

OVERALL = ""


class Health:
    """Wraps grpc_health's asyncio servicer for a fixed set of service names."""

    def __init__(self, service_names: Sequence[str]) -> None:
        self.servicer = health.aio.HealthServicer()
        self.service_names = (OVERALL, *service_names)

    async def set_serving(self, serving: bool) -> None:
        statuses = health_pb2.HealthCheckResponse
        status = statuses.SERVING if serving else statuses.NOT_SERVING
        for name in self.service_names:
            await self.servicer.set(name, status)

    async def shut_down(self) -> None:
        """NOT_SERVING everywhere, permanently (later `set_serving` calls are ignored)."""
        await self.set_serving(False)
        await self.servicer.enter_graceful_shutdown()
