"""The one place that builds channels: TLS, token, keepalive, retries, health, message sizes.

Both clients (sync and asyncio) take their channel from here, so the two behave the same.
Choices, and why:
- Retries: a service config retries UNAVAILABLE with exponential backoff. A server stream is
  retried only until its first response arrives (gRPC commits the call then), so a retry never
  replays audio the caller has already seen.
- Health: `round_robin` with client-side health checking (gRFC A17) sends calls only to replicas
  whose grpc.health.v1 status for TextToSpeech is SERVING: a replica that is still loading its
  model or draining gets no new calls, and a DNS name listing several replicas is balanced.
  Servers without the health service are treated as healthy.
- Token: over TLS it travels as call credentials. gRPC refuses call credentials on insecure
  channels, so without TLS it is sent as plain `authorization: Bearer` metadata: fine on
  loopback or inside a mesh that encrypts, visible to anyone on the path otherwise.
- Keepalive pings every 30 s by default, no closer than the server's 10 s minimum (closer pings
  are answered with GOAWAY "too_many_pings").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import grpc

from barkstream.v1 import tts_pb2

SERVICE_NAME: str = tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].full_name
DEFAULT_PORT = 50051
DEFAULT_TARGET = f"localhost:{DEFAULT_PORT}"
MIB = 1024 * 1024
_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "xds:", "vsock:")

ChannelOption = tuple[str, Any]
Metadata = tuple[tuple[str, str], ...]


def _read(value: bytes | str | Path | None) -> bytes | None:
    """PEM given as bytes, or as the path of a file holding it."""
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).expanduser().read_bytes()


@dataclass(frozen=True)
class TLS:
    """Transport security. Empty = the system's root certificates, no client certificate.

    root_certificates: PEM of the CA(s) to trust (a private CA, a self-signed server).
    private_key / certificate_chain: PEM of this client's key and certificate, for mutual TLS.
    server_name: the name to verify in the server's certificate when it differs from the
      target's host (e.g. connecting by IP); sets grpc.ssl_target_name_override.
    """

    root_certificates: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    certificate_chain: bytes | None = None
    server_name: str | None = None

    @classmethod
    def from_files(cls, ca: str | Path | None = None, cert: str | Path | None = None,
                   key: str | Path | None = None, server_name: str | None = None) -> TLS:
        """Read PEM files: `ca` to trust, `cert` + `key` to present (mutual TLS)."""
        if (cert is None) != (key is None):
            raise ValueError("mutual TLS needs both a client certificate and its private key")
        return cls(_read(ca), _read(key), _read(cert), server_name)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.root_certificates, self.private_key, self.certificate_chain)


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's retry policy for TextToSpeech calls (see the module docstring).

    The n-th retry waits a random time in [0, min(initial_backoff_s * multiplier**(n-1),
    max_backoff_s)]. gRPC caps max_attempts at 5; 1 turns retries off.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    backoff_multiplier: float = 2.0
    retryable_codes: tuple[str, ...] = ("UNAVAILABLE",)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts={self.max_attempts}: use 1 (no retries) or more")
        if self.initial_backoff_s <= 0 or self.max_backoff_s <= 0 or self.backoff_multiplier <= 0:
            raise ValueError("backoff times and multiplier must be positive")
        for code in self.retryable_codes:
            if code not in grpc.StatusCode.__members__:
                raise ValueError(f"retryable code {code!r} is not a grpc.StatusCode name")

    def method_config(self) -> dict[str, Any]:
        return {
            "maxAttempts": self.max_attempts,
            "initialBackoff": f"{self.initial_backoff_s:.3f}s",
            "maxBackoff": f"{self.max_backoff_s:.3f}s",
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": list(self.retryable_codes),
        }


DEFAULT_RETRY = RetryPolicy()
Credentials = TLS | grpc.ChannelCredentials


@dataclass(frozen=True)
class ChannelConfig:
    """Everything that shapes a client's channel; built once by the client's constructor."""

    target: str = DEFAULT_TARGET
    tls: Credentials | None = None
    token: str | None = field(default=None, repr=False)
    retry: RetryPolicy | None = DEFAULT_RETRY
    health_check: bool = True
    keepalive_time_s: float = 30.0
    keepalive_timeout_s: float = 10.0
    max_message_bytes: int = 16 * MIB
    max_reconnect_backoff_s: float = 10.0
    metadata: Metadata = ()
    options: tuple[ChannelOption, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", normalize_target(self.target))
        if self.keepalive_time_s < 10:
            raise ValueError(f"keepalive_time_s={self.keepalive_time_s}: use 10 s or more (the server's minimum)")
        if self.max_message_bytes <= 0:
            raise ValueError("max_message_bytes must be positive")


def normalize_target(target: str) -> str:
    """`host` -> `host:50051`; `host:port`, `[v6]:port` and `scheme:...` targets pass unchanged."""
    target = target.strip()
    if not target:
        raise ValueError("target is empty: use HOST:PORT, e.g. localhost:50051")
    if "://" in target or target.startswith(_SCHEMES):
        return target
    if target.startswith("["):
        return target if "]:" in target else f"{target}:{DEFAULT_PORT}"
    if target.count(":") > 1:  # a bare IPv6 address
        return f"[{target}]:{DEFAULT_PORT}"
    if ":" in target:
        port = target.rsplit(":", 1)[1]
        if not port.isdigit():
            raise ValueError(f"target {target!r}: the port must be a number (HOST:PORT)")
        return target
    return f"{target}:{DEFAULT_PORT}"


def user_agent() -> str:
    try:
        version = _metadata.version("barkstream")
    except _metadata.PackageNotFoundError:
        version = "dev"
    return f"barkstream-python/{version}"


def service_config(cfg: ChannelConfig) -> dict[str, Any]:
    method: dict[str, Any] = {"name": [{"service": SERVICE_NAME}]}
    if cfg.retry is not None and cfg.retry.max_attempts > 1:
        method["retryPolicy"] = cfg.retry.method_config()
    config: dict[str, Any] = {"methodConfig": [method]}
    if cfg.health_check:
        config["loadBalancingConfig"] = [{"round_robin": {}}]
        config["healthCheckConfig"] = {"serviceName": SERVICE_NAME}
    return config


def channel_options(cfg: ChannelConfig) -> list[ChannelOption]:
    """grpc channel arguments; `cfg.options` override ours key by key."""
    ours: list[ChannelOption] = [
        ("grpc.service_config", json.dumps(service_config(cfg))),
        ("grpc.enable_retries", 1),
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.keepalive_time_ms", int(cfg.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(cfg.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_reconnect_backoff_ms", int(cfg.max_reconnect_backoff_s * 1000)),
        ("grpc.primary_user_agent", user_agent()),
    ]
    if isinstance(cfg.tls, TLS) and cfg.tls.server_name:
        ours.append(("grpc.ssl_target_name_override", cfg.tls.server_name))
    overridden = {key for key, _ in cfg.options}
    return [opt for opt in ours if opt[0] not in overridden] + list(cfg.options)


def channel_credentials(cfg: ChannelConfig) -> grpc.ChannelCredentials | None:
    """None for an insecure channel; else TLS, composed with the token as call credentials."""
    if cfg.tls is None:
        return None
    creds = cfg.tls.credentials() if isinstance(cfg.tls, TLS) else cfg.tls
    if cfg.token:
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(cfg.token))
    return creds


def call_metadata(cfg: ChannelConfig) -> Metadata:
    """Metadata sent with every call: the extra headers, and the token on insecure channels."""
    if cfg.token and cfg.tls is None:
        return (("authorization", f"Bearer {cfg.token}"), *cfg.metadata)
    return cfg.metadata


def open_channel(cfg: ChannelConfig) -> grpc.Channel:
    creds = channel_credentials(cfg)
    if creds is None:
        return grpc.insecure_channel(cfg.target, options=channel_options(cfg))
    return grpc.secure_channel(cfg.target, creds, options=channel_options(cfg))


def open_aio_channel(cfg: ChannelConfig) -> grpc.aio.Channel:
    """Call from inside the event loop that will use the channel."""
    creds = channel_credentials(cfg)
    if creds is None:
        return grpc.aio.insecure_channel(cfg.target, options=channel_options(cfg))
    return grpc.aio.secure_channel(cfg.target, creds, options=channel_options(cfg))


def make_config(target: str, tls: bool | Credentials | None, token: str | None, *,
                retry: RetryPolicy | None, health_check: bool, keepalive_time_s: float,
                max_message_bytes: int, metadata: Metadata | dict[str, str] | None,
                options: tuple[ChannelOption, ...] | list[ChannelOption] | None) -> ChannelConfig:
    """The clients' keyword arguments -> a ChannelConfig (tls=True means TLS with system roots)."""
    if tls is True:
        tls = TLS()
    elif tls is False:
        tls = None
    if tls is not None and not isinstance(tls, TLS | grpc.ChannelCredentials):
        raise TypeError(f"tls={tls!r}: use None, True, barkstream.client.TLS(...) or grpc.ChannelCredentials")
    if token is not None and not token.strip():
        raise ValueError("token is empty: pass None for no token")
    pairs = tuple(metadata.items()) if isinstance(metadata, dict) else tuple(metadata or ())
    for key, _ in pairs:
        if key != key.lower():
            raise ValueError(f"metadata key {key!r}: gRPC metadata keys must be lowercase")
    return ChannelConfig(target=target, tls=tls, token=token, retry=retry, health_check=health_check,
                         keepalive_time_s=keepalive_time_s, max_message_bytes=max_message_bytes,
                         metadata=pairs, options=tuple(options or ()))
