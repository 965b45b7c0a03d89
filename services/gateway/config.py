"""Gateway settings: flags `--http-port`..., environment `BARKSTREAM_HTTP_PORT`... (parsed once at the edge)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..common.config import _help

KIB = 1024
DEFAULT_HTTP_PORT = 8080

# OpenAI's voice names -> Bark presets, so clients that only know OpenAI's names (Open WebUI,
# Pipecat, the `openai` package's examples) get a real voice without configuration.
DEFAULT_VOICE_ALIASES = (
    "alloy=v2/en_speaker_6,ash=v2/en_speaker_3,ballad=v2/en_speaker_8,coral=v2/en_speaker_9,"
    "echo=v2/en_speaker_1,fable=v2/en_speaker_2,onyx=v2/en_speaker_7,nova=v2/en_speaker_9,"
    "sage=v2/en_speaker_4,shimmer=v2/en_speaker_5,verse=v2/en_speaker_0,marin=v2/en_speaker_9,"
    "cedar=v2/en_speaker_6"
)
# Model names a client may send: OpenAI's speech models (clients often hard-code one) and ours.
DEFAULT_MODELS = "bark,tts-1,tts-1-hd,gpt-4o-mini-tts"


@dataclass(frozen=True)
class GatewayConfig:
    """The HTTP side of the gateway. Its TLS certificate, token file and drain time are the server's own
    (`--tls-cert-file`, `--auth-token-file`, `--drain-grace-s`)."""

    http_port: int = field(default=0, metadata=_help(
        f"serve the HTTP gateway on this port (embedded server: 0 = no gateway; `serve gateway`: 0 = "
        f"{DEFAULT_HTTP_PORT})"))
    http_host: str = field(default="0.0.0.0", metadata=_help("address the HTTP gateway listens on"))
    target: str = field(default="localhost:50051", metadata=_help(
        "serve gateway: the orchestrator's address (the embedded server uses its own port)"))
    target_ca_file: str = field(default="", metadata=_help(
        "serve gateway: PEM CA of the orchestrator's certificate (turns on TLS to it)"))
    target_server_name: str = field(default="", metadata=_help(
        "serve gateway: name to verify in the orchestrator's certificate instead of the target's host"))
    voice_aliases: str = field(default=DEFAULT_VOICE_ALIASES, metadata=_help(
        "voice names mapped to presets, NAME=PRESET comma-separated (OpenAI's names by default)"))
    models: str = field(default=DEFAULT_MODELS, metadata=_help("model names accepted and listed, comma-separated"))
    max_body_bytes: int = field(default=64 * KIB, metadata=_help("largest HTTP request body (413 beyond)"))
    max_ws_message_bytes: int = field(default=256 * KIB, metadata=_help(
        "largest WebSocket message (closed with 1009 beyond)"))
    write_timeout_s: float = field(default=30.0, metadata=_help(
        "give up on a client that has not taken any audio for this long (it stopped reading)"))
    request_timeout_s: float = field(default=600.0, metadata=_help(
        "deadline of each speech request's gRPC call (0 = none)"))
    ws_first_message_timeout_s: float = field(default=10.0, metadata=_help(
        "a WebSocket must send its configuration within this many seconds"))

    def __post_init__(self) -> None:
        if not 0 <= self.http_port <= 65535:
            raise ValueError(f"http_port={self.http_port}: use 1..65535 (0: see --help)")
        for name in ("max_body_bytes", "max_ws_message_bytes", "write_timeout_s", "ws_first_message_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)}: use a positive number")
        if self.request_timeout_s < 0:
            raise ValueError(f"request_timeout_s={self.request_timeout_s}: use 0 (none) or more seconds")
        parse_aliases(self.voice_aliases)
        if not self.model_names:
            raise ValueError("models: name at least one model")

    @property
    def aliases(self) -> dict[str, str]:
        return parse_aliases(self.voice_aliases)

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.models.split(",") if m.strip())


def parse_aliases(spec: str) -> dict[str, str]:
    """`alloy=v2/en_speaker_6,echo=v2/en_speaker_1` -> {"alloy": "v2/en_speaker_6", ...}."""
    aliases: dict[str, str] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        name, sep, preset = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"voice_aliases: {item!r} is not NAME=PRESET")
        aliases[name.strip()] = preset.strip()
    return aliases
