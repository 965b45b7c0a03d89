"""The gateway's one channel to the orchestrator, built like the SDK's (retries, keepalive, health-aware
balancing over `dns:///` replicas) plus the telemetry interceptors that carry the trace context on."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from barkstream.client._channel import TLS, ChannelConfig, channel_credentials, channel_options
from barkstream.v1 import tts_pb2, tts_pb2_grpc

from ..common.auth import bearer_metadata
from ..common.server_calls import REQUEST_ID_METADATA
from ..telemetry import Telemetry
from .errors import from_rpc_error

SERVICE = tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].full_name
MIB = 1024 * 1024


class Upstream:
    """A lazily opened grpc.aio channel (it belongs to the event loop that first uses it)."""

    def __init__(self, target: str, *, ca_file: str = "", server_name: str = "",
                 telemetry: Telemetry | None = None) -> None:
        tls = TLS.from_files(ca=ca_file, server_name=server_name or None) if ca_file else None
        self.config = ChannelConfig(target=target, tls=tls, max_message_bytes=16 * MIB)
        self.telemetry = telemetry or Telemetry()
        self._channel: grpc.aio.Channel | None = None
        self._stub: tts_pb2_grpc.TextToSpeechStub | None = None

    @property
    def stub(self) -> tts_pb2_grpc.TextToSpeechStub:
        if self._stub is None:
            creds = channel_credentials(self.config)
            options, interceptors = channel_options(self.config), self.telemetry.client_interceptors()
            if creds is None:
                self._channel = grpc.aio.insecure_channel(self.config.target, options, interceptors=interceptors)
            else:
                self._channel = grpc.aio.secure_channel(self.config.target, creds, options,
                                                        interceptors=interceptors)
            self._stub = tts_pb2_grpc.TextToSpeechStub(self._channel)
        return self._stub

    @staticmethod
    def metadata(token: str | None, request_id: str = "") -> tuple[tuple[str, str], ...]:
        """The caller's own token goes on, so the orchestrator's per-client limits see the caller."""
        return bearer_metadata(token) + (((REQUEST_ID_METADATA, request_id),) if request_id else ())

    async def serving(self) -> bool:
        """Whether the orchestrator's health says SERVING for TextToSpeech (readiness)."""
        self.stub  # noqa: B018 - opens the channel
        try:
            reply = await health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=2.0)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def voices(self, token: str | None) -> list[tts_pb2.Voice]:
        try:
            reply = await self.stub.ListVoices(tts_pb2.ListVoicesRequest(), metadata=self.metadata(token),
                                               timeout=10.0)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return list(reply.voices)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None
