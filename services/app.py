"""Assemble a server for one role (a stage, the orchestrator, or all five in one process).

The servicers are built once and registered before the port opens; models, tokenizer,
voices and stage channels are made during the warm-up (into the `Ready` slots the servicers
hold), while health says NOT_SERVING and admission refuses streams. Each
stage process loads only its own model.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from barkstream.v1 import stages_pb2, stages_pb2_grpc, tts_pb2, tts_pb2_grpc

from .common.config import ServerConfig, _help
from .common.ready import Ready
from .common.server import ServerHandle, client_channel_options
from .telemetry import Telemetry

log = logging.getLogger(__name__)

STAGE_ROLES = ("semantic", "coarse", "fine", "codec")
ROLES = ("all", *STAGE_ROLES, "orchestrator")
SERVICE_NAMES = {
    "semantic": stages_pb2.DESCRIPTOR.services_by_name["SemanticService"].full_name,
    "coarse": stages_pb2.DESCRIPTOR.services_by_name["CoarseService"].full_name,
    "fine": stages_pb2.DESCRIPTOR.services_by_name["FineService"].full_name,
    "codec": stages_pb2.DESCRIPTOR.services_by_name["CodecService"].full_name,
    "orchestrator": tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].full_name,
}


@dataclass(frozen=True)
class ServeConfig:
    """Model and pipeline settings (flags `--checkpoint`..., env `BARKSTREAM_CHECKPOINT`...)."""

    checkpoint: str = field(default="", metadata=_help(
        "checkpoint directory (HF snapshot or Suno .pt files); empty: suno/bark-small from the HF hub/cache"))
    random_checkpoint: str = field(default="", metadata=_help(
        "tiny or small: serve a random checkpoint written on first use (demos and tests, no download)"))
    random_checkpoint_dir: str = field(default="", metadata=_help(
        "where --random-checkpoint writes (default ~/.cache/barkstream/random-SIZE[-eos])"))
    random_checkpoint_eos: bool = field(default=False, metadata=_help(
        "the random checkpoint's semantic model ends segments after a length that grows with the text"))
    device: str = field(default="cpu", metadata=_help("cpu or cuda[:N]"))
    dtype: str = field(default="float32", metadata=_help("float32, bfloat16 or float16 (transformers)"))
    flash_attn: bool = field(default=False, metadata=_help("use the flash-attn package where it applies"))
    quantize: str = field(default="none", metadata=_help(
        "none or int8: weight-only int8 transformer linears (opt-in; faster decode, not token-exact)"))
    max_batch: int = field(default=8, metadata=_help("rows per engine batch"))
    semantic_target: str = field(default="", metadata=_help("orchestrator: semantic address(es); empty: this process"))
    coarse_target: str = field(default="", metadata=_help("orchestrator: coarse address(es)"))
    fine_target: str = field(default="", metadata=_help("orchestrator: fine address(es)"))
    codec_target: str = field(default="", metadata=_help("orchestrator: codec address(es)"))
    voices_dir: str = field(default="", metadata=_help("extra voice preset directories, comma-separated"))
    max_text_chars: int = field(default=4000, metadata=_help("longest text a request may carry"))
    max_segments: int = field(default=64, metadata=_help("most segments one request may make"))
    max_segment_tokens: int = field(default=48, metadata=_help("text tokens per segment"))
    max_queued_streams: int = field(default=-1, metadata=_help(
        "stages: streams that may wait for a batch row beyond --max-batch; more get RESOURCE_EXHAUSTED "
        "(-1: only --max-concurrent-streams bounds them)"))
    max_streams_per_client: int = field(default=0, metadata=_help(
        "orchestrator: Synthesize streams one client (its token, or its host without auth) runs at once; "
        "0 = no per-client limit"))
    auth_token_file: str = field(default="", metadata=_help(
        "orchestrator: require a bearer token listed in this file (one per line)"))
    auth_token: str = field(default="", repr=False, metadata=_help(
        "orchestrator: require this bearer token (set it through the environment, not the command line)"))
    stage_tls_ca_file: str = field(default="", metadata=_help("orchestrator: PEM CA that issued the stages' "
                                                              "certificates (turns on TLS to the stages)"))
    stage_tls_cert_file: str = field(default="", metadata=_help(
        "orchestrator: PEM client certificate shown to the stages (mutual TLS)"))
    stage_tls_key_file: str = field(default="", metadata=_help("orchestrator: PEM key of --stage-tls-cert-file"))
    stage_tls_server_name: str = field(default="", metadata=_help(
        "orchestrator: name to verify in the stages' certificates instead of the target's host"))
    stage_attempts: int = field(default=3, metadata=_help(
        "orchestrator: runs of a segment when a stage replica fails mid-stream (1 = no retry)"))

    def __post_init__(self) -> None:
        if self.random_checkpoint not in ("", "tiny", "small"):
            raise ValueError(f"random_checkpoint={self.random_checkpoint!r}: use tiny or small")
        if self.max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if self.quantize not in ("none", "int8"):
            raise ValueError(f"quantize={self.quantize!r}: use none or int8")
        if self.max_queued_streams < -1:
            raise ValueError("max_queued_streams must be -1 (unbounded) or more")
        if self.max_streams_per_client < 0:
            raise ValueError("max_streams_per_client must be 0 (off) or more")
        if self.stage_attempts < 1:
            raise ValueError("stage_attempts must be 1 or more")


def checkpoint_dir(cfg: ServeConfig) -> Path:
    """The directory to load, writing a random checkpoint first when asked to."""
    from .checkpoint.hub import resolve_checkpoint

    if cfg.random_checkpoint:
        from .checkpoint.random_writer import ensure_random_checkpoint

        suffix = "-eos" if cfg.random_checkpoint_eos else ""
        default = Path.home() / ".cache" / "barkstream" / f"random-{cfg.random_checkpoint}{suffix}"
        out = Path(cfg.random_checkpoint_dir or default)
        log.info("random %s checkpoint in %s (written if missing)", cfg.random_checkpoint, out)
        return ensure_random_checkpoint(out, size=cfg.random_checkpoint, seed=0,
                                        text_length_eos=cfg.random_checkpoint_eos)
    return resolve_checkpoint(cfg.checkpoint or None)


class App:
    """Servicers of one role on one ServerHandle, with their engines started during warm-up."""

    def __init__(self, role: str, serve: ServeConfig, server: ServerConfig, telemetry: Telemetry | None = None):
        """telemetry: traces and metrics (built by `barkstream serve` from OTEL_* and --metrics-port); default off."""
        if role not in ROLES:
            raise ValueError(f"role {role!r}: use one of {', '.join(ROLES)}")
        self.role = role
        self.serve_config = serve
        self.server_config = server
        self.stages = STAGE_ROLES if role == "all" else ((role,) if role in STAGE_ROLES else ())
        self.orchestrated = role in ("all", "orchestrator")
        names = [SERVICE_NAMES[s] for s in self.stages] + ([SERVICE_NAMES["orchestrator"]] if self.orchestrated else [])
        self._internal_token: str | None = None
        self.telemetry = telemetry or Telemetry()
        # Telemetry outermost: refused calls get their span and duration too.
        self.handle = ServerHandle(server, names,
                                   interceptors=self.telemetry.server_interceptors() + self._front_door(names))
        self.servicers: dict[str, object] = {}
        # What the warm-up makes; the servicers hold these from construction.
        self.runner_slots: dict[str, Ready] = {}
        self.tokenizer: Ready = Ready("the tokenizer")
        self.pipeline: Ready = Ready("the voices, tokenizer and stage channels")
        self.runners: dict = {}
        self.stage_clients = None
        self._register()
        self.telemetry.watch_streams(lambda: [(a.name, a.active) for a in self.handle.admissions])

    def _front_door(self, names: list[str]) -> list[grpc.aio.ServerInterceptor]:
        """Token check and per-client limits on every barkstream service an orchestrator serves.

        In the embedded server that includes the stage services on the same port; the
        orchestrator reaches them with an internal token, everyone else needs a configured one.
        """
        if not self.orchestrated:
            return []
        from .common.auth import front_door

        cfg = self.serve_config
        interceptors, self._internal_token = front_door(
            names, [f"/{SERVICE_NAMES['orchestrator']}/{m}" for m in ("Synthesize", "StreamingSynthesize")],
            token_file=cfg.auth_token_file,
            token=cfg.auth_token, max_streams_per_client=cfg.max_streams_per_client,
            retry_after_ms=self.server_config.retry_after_ms, internal=bool(self.stages))
        return interceptors

    def _stage_limit(self) -> int | None:
        """Streams a stage admits: what its engine batches plus at most max_queued_streams waiting."""
        queued = self.serve_config.max_queued_streams
        if queued < 0:
            return None
        return min(self.server_config.max_concurrent_streams, self.serve_config.max_batch + queued)

    def _register(self) -> None:
        """Build each servicer once, holding `Ready` slots for what the warm-up will make."""
        # Each stage servicer is imported only when this process runs that stage: they pull in
        # torch, which an orchestrator-only process must not load.
        server, h = self.handle.server, self.handle
        # With the orchestrator in this process, its streams call these stages: they drain after it.
        inner, limit = self.orchestrated, self._stage_limit()
        for stage in self.stages:
            self.runner_slots[stage] = Ready(f"the {stage} engine")
        if "semantic" in self.stages:
            from .semantic.servicer import SemanticServicer

            self.servicers["semantic"] = s = SemanticServicer(
                self.runner_slots["semantic"], h.admission("semantic", limit, inner=inner), self.tokenizer)
            stages_pb2_grpc.add_SemanticServiceServicer_to_server(s, server)
        if "coarse" in self.stages:
            from .coarse.servicer import CoarseServicer

            self.servicers["coarse"] = s = CoarseServicer(
                self.runner_slots["coarse"], h.admission("coarse", limit, inner=inner))
            stages_pb2_grpc.add_CoarseServiceServicer_to_server(s, server)
        if "fine" in self.stages:
            from .fine.servicer import FineServicer

            self.servicers["fine"] = s = FineServicer(
                self.runner_slots["fine"], h.admission("fine", limit, inner=inner))
            stages_pb2_grpc.add_FineServiceServicer_to_server(s, server)
        if "codec" in self.stages:
            from .codec.servicer import CodecServicer

            self.servicers["codec"] = s = CodecServicer(
                self.runner_slots["codec"], h.admission("codec", limit, inner=inner))
            stages_pb2_grpc.add_CodecServiceServicer_to_server(s, server)
        if self.orchestrated:
            from .orchestrator.servicer import OrchestratorLimits, TextToSpeechServicer

            limits = OrchestratorLimits(self.serve_config.max_text_chars, self.serve_config.max_segments,
                                        self.serve_config.max_segment_tokens)
            self.servicers["orchestrator"] = s = TextToSpeechServicer(
                self.pipeline, h.admission("orchestrator"), limits, telemetry=self.telemetry)
            tts_pb2_grpc.add_TextToSpeechServicer_to_server(s, server)

    async def warmup(self) -> None:
        """Load what the servicers call (models, tokenizer, voices, stage channels): health follows it."""
        tokenizer, voices = await asyncio.to_thread(self._load)
        self.tokenizer.set(tokenizer)
        if self.orchestrated:
            from .orchestrator.synthesis import Pipeline

            self.pipeline.set(Pipeline(self._connect_stages(), tokenizer, voices))

    def _load(self):
        from .bark.tokenizer import BarkTokenizer
        from .bark.voices import HF_INDEX, VoiceLibrary

        cfg = self.serve_config
        root = checkpoint_dir(cfg)
        if self.stages:
            from .checkpoint.load import load_checkpoint

            ckpt = load_checkpoint(root)
            self._start_engines(ckpt)
            root = ckpt.root
        # The tokenizer and the voices are plain files of the checkpoint: an orchestrator-only process
        # reads them without loading (or holding) any weights.
        has_tokenizer = any((root / n).is_file() for n in ("tokenizer.json", "vocab.txt"))
        tokenizer = BarkTokenizer.from_dir(root) if has_tokenizer else None
        if not self.orchestrated:
            return tokenizer, None
        if tokenizer is None:
            raise ValueError(f"checkpoint {root} has no tokenizer files (vocab.txt / tokenizer.json)")
        roots = [root] if (root / HF_INDEX).is_file() else []
        roots += [Path(p) for p in cfg.voices_dir.split(",") if p.strip()]
        return tokenizer, VoiceLibrary(roots)

    def _start_engines(self, ckpt) -> None:
        from .stages.coarse import CoarseEngine
        from .stages.codec import CodecEngine
        from .stages.fine import FineEngine
        from .stages.models import ModelOptions, load_stage_models
        from .stages.runner import EngineRunner
        from .stages.semantic import SemanticEngine

        cfg = self.serve_config
        options = ModelOptions(cfg.device, cfg.dtype, cfg.flash_attn, quantize=cfg.quantize)
        models = load_stage_models(ckpt, self.stages, options)
        engines = {
            "semantic": lambda obs: SemanticEngine(models.semantic, cfg.max_batch, observer=obs),
            "coarse": lambda obs: CoarseEngine(models.coarse, cfg.max_batch, observer=obs),
            "fine": lambda obs: FineEngine(models.fine, cfg.max_batch, observer=obs),
            "codec": lambda obs: CodecEngine(models.codec, cfg.max_batch, observer=obs),
        }
        for stage in self.stages:
            observer = self.telemetry.stage(stage)
            runner = EngineRunner(engines[stage](observer), stage, observer=observer).start()
            self.runners[stage] = runner
            self.runner_slots[stage].set(runner)

    def _connect_stages(self):
        from .common.auth import bearer_metadata
        from .common.tls import stage_channel_tls
        from .orchestrator.stage_clients import StageClients

        cfg = self.serve_config
        own = f"127.0.0.1:{self.handle.port}"
        # The embedded server dials its own port: TLS there when the port has it.
        tls = stage_channel_tls(cfg.stage_tls_ca_file, cfg.stage_tls_cert_file, cfg.stage_tls_key_file,
                                cfg.stage_tls_server_name,
                                own_cert_file=self.server_config.tls_cert_file if self.stages else "")
        self.stage_clients = StageClients(
            cfg.semantic_target or own, cfg.coarse_target or own, cfg.fine_target or own, cfg.codec_target or own,
            options=client_channel_options(self.server_config) + (tls.options() if tls else []),
            credentials=tls.credentials() if tls else None, call_metadata=bearer_metadata(self._internal_token),
            max_attempts=cfg.stage_attempts, interceptors=self.telemetry.client_interceptors())
        return self.stage_clients

    async def serve(self, handle_signals: bool = True) -> None:
        try:
            await self.handle.serve(self.warmup, handle_signals=handle_signals)
        finally:
            await self.close()

    async def close(self) -> None:
        for runner in self.runners.values():
            runner.stop()
        if self.stage_clients is not None:
            await self.stage_clients.close()
