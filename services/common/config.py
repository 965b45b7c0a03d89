"""Server settings, parsed once at the process edge.

Every field of a settings dataclass becomes a flag `--field-name` and an environment variable
`BARKSTREAM_FIELD_NAME` (flag beats environment beats the service's defaults), so the same
binary runs from a shell, a Makefile or a Kubernetes manifest. Code below `__main__` receives
the frozen dataclass and never reads `os.environ`.

The helpers are generic (`add_dataclass_args`, `dataclass_from_args`) so that each service's
own settings (checkpoint path, batch size, stage addresses) follow the same convention.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

ENV_PREFIX = "BARKSTREAM_"
MIB = 1024 * 1024

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def flag_name(name: str) -> str:
    """`max_concurrent_streams` -> `--max-concurrent-streams`."""
    return "--" + name.replace("_", "-")


def env_name(name: str, prefix: str = ENV_PREFIX) -> str:
    """`max_concurrent_streams` -> `BARKSTREAM_MAX_CONCURRENT_STREAMS`."""
    return prefix + name.upper()


def _field_types(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    types = {}
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        if typ not in (int, float, str, bool):
            raise TypeError(f"{cls.__name__}.{f.name}: only int, float, str and bool settings are supported")
        types[f.name] = typ
    return types


def _parse(typ: type, raw: str, source: str) -> Any:
    text = raw.strip()
    if typ is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"{source}={raw!r}: use one of 1/0, true/false, yes/no, on/off")
    try:
        return typ(text)
    except ValueError:
        raise ValueError(f"{source}={raw!r}: expected {typ.__name__}") from None


def add_dataclass_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                       prefix: str = ENV_PREFIX) -> None:
    """Add one flag per field of `cls`; defaults stay None so "not given" is visible later."""
    defaults = cls()
    for f in dataclasses.fields(cls):
        typ = _field_types(cls)[f.name]
        default = getattr(defaults, f.name)
        help_text = f"{f.metadata.get('help', '')} [env {env_name(f.name, prefix)}; default {default!r}]"
        if typ is bool:
            parser.add_argument(flag_name(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(flag_name(f.name), dest=f.name, type=typ, default=None,
                                metavar=typ.__name__.upper(), help=help_text)


def dataclass_from_args(cls: type[T], ns: argparse.Namespace, environ: Mapping[str, str],
                        base: T | None = None, prefix: str = ENV_PREFIX) -> T:
    """Build `cls` from parsed flags, then environment, then `base` (a service's own defaults)."""
    base = cls() if base is None else base
    values: dict[str, Any] = {}
    for name, typ in _field_types(cls).items():
        value = getattr(ns, name, None)
        if value is None and env_name(name, prefix) in environ:
            value = _parse(typ, environ[env_name(name, prefix)], env_name(name, prefix))
        if value is not None:
            values[name] = value
    return dataclasses.replace(base, **values)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class ServerConfig:
    """Transport and lifecycle settings shared by every barkstream server."""

    host: str = field(default="0.0.0.0", metadata=_help("address to listen on"))
    port: int = field(default=50051, metadata=_help("port to listen on (0 = any free port)"))
    max_concurrent_streams: int = field(
        default=32, metadata=_help("streams each service runs at once; more get RESOURCE_EXHAUSTED"))
    retry_after_ms: int = field(
        default=1000, metadata=_help("retry hint sent in `retry-after-ms` with RESOURCE_EXHAUSTED"))
    drain_grace_s: float = field(
        default=30.0, metadata=_help("on SIGTERM, how long in-flight streams may run before cancellation"))
    max_send_message_bytes: int = field(default=16 * MIB, metadata=_help("largest message sent"))
    max_receive_message_bytes: int = field(default=16 * MIB, metadata=_help("largest message accepted"))
    keepalive_time_ms: int = field(
        default=30_000, metadata=_help("send an HTTP/2 ping after this long without activity"))
    keepalive_timeout_ms: int = field(
        default=10_000, metadata=_help("close the connection if a ping is not answered within this"))
    min_client_ping_interval_ms: int = field(
        default=10_000, metadata=_help("shortest interval between client pings the server tolerates"))
    http2_max_concurrent_streams: int = field(
        default=0, metadata=_help("HTTP/2 streams per connection (0 = gRPC's default)"))
    max_connection_age_ms: int = field(
        default=0, metadata=_help("close connections after this long so clients rebalance (0 = never)"))
    max_connection_age_grace_ms: int = field(
        default=0, metadata=_help("time streams get to finish after max_connection_age (0 = unlimited)"))
    tls_cert_file: str = field(default="", metadata=_help("PEM certificate chain: serve TLS (with --tls-key-file)"))
    tls_key_file: str = field(default="", metadata=_help("PEM private key of --tls-cert-file"))
    tls_client_ca_file: str = field(default="", metadata=_help(
        "PEM CA: require client certificates it issued (mutual TLS; stages behind an orchestrator)"))
    log_format: str = field(default="plain", metadata=_help(
        "per-request log lines as plain key=value text or json (INFO on the orchestrator, DEBUG on the stages)"))

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port={self.port}: use 0..65535 (0 picks a free port)")
        if self.max_concurrent_streams < 1:
            raise ValueError(f"max_concurrent_streams={self.max_concurrent_streams}: use 1 or more")
        if self.drain_grace_s < 0:
            raise ValueError(f"drain_grace_s={self.drain_grace_s}: use 0 or more seconds")
        for name in ("max_send_message_bytes", "max_receive_message_bytes", "keepalive_time_ms",
                     "keepalive_timeout_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)}: use a positive number")
        for name in ("retry_after_ms", "min_client_ping_interval_ms", "http2_max_concurrent_streams",
                     "max_connection_age_ms", "max_connection_age_grace_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: use 0 or more")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file: give both (TLS) or neither (plaintext)")
        if self.log_format not in ("plain", "json"):
            raise ValueError(f"log_format={self.log_format!r}: use plain or json")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file (mutual TLS is TLS)")

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @classmethod
    def from_args(cls, ns: argparse.Namespace, environ: Mapping[str, str],
                  base: ServerConfig | None = None) -> ServerConfig:
        """Flags > `BARKSTREAM_*` environment > `base` (e.g. `ServerConfig(port=50052)`) > defaults."""
        return dataclass_from_args(cls, ns, environ, base)


def add_server_args(parser: argparse.ArgumentParser) -> None:
    """Add ServerConfig's flags as their own help group."""
    add_dataclass_args(parser.add_argument_group("server"), ServerConfig)
