"""Assemble a server for one role (a stage, the orchestrator, or all five in one process).

The servicers are registered before the port opens; models load during the
warm-up, while health says NOT_SERVING and admission refuses streams. Each
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
from .common.server import ServerHandle, client_channel_options

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
        "where --random-checkpoint writes (default ~/.cache/barkstream/random-SIZE)"))
    device: str = field(default="cpu", metadata=_help("cpu or cuda[:N]"))
    dtype: str = field(default="float32", metadata=_help("float32, bfloat16 or float16 (transformers)"))
    flash_attn: bool = field(default=False, metadata=_help("use the flash-attn package where it applies"))
    max_batch: int = field(default=8, metadata=_help("rows per engine batch"))
    semantic_target: str = field(default="", metadata=_help("orchestrator: semantic address(es); empty: this process"))
    coarse_target: str = field(default="", metadata=_help("orchestrator: coarse address(es)"))
    fine_target: str = field(default="", metadata=_help("orchestrator: fine address(es)"))
    codec_target: str = field(default="", metadata=_help("orchestrator: codec address(es)"))
    voices_dir: str = field(default="", metadata=_help("extra voice preset directories, comma-separated"))
    max_text_chars: int = field(default=4000, metadata=_help("longest text a request may carry"))
    max_segments: int = field(default=64, metadata=_help("most segments one request may make"))
    max_segment_tokens: int = field(default=48, metadata=_help("text tokens per segment"))

    def __post_init__(self) -> None:
        if self.random_checkpoint not in ("", "tiny", "small"):
            raise ValueError(f"random_checkpoint={self.random_checkpoint!r}: use tiny or small")
        if self.max_batch < 1:
            raise ValueError("max_batch must be >= 1")


def checkpoint_dir(cfg: ServeConfig) -> Path:
    """The directory to load, writing a random checkpoint first when asked to."""
    from .model.hub import resolve_checkpoint

    if cfg.random_checkpoint:
        from .model.checkpoint import write_random_checkpoint

        default = Path.home() / ".cache" / "barkstream" / f"random-{cfg.random_checkpoint}"
        out = Path(cfg.random_checkpoint_dir or default)
        if not (out / "config.json").is_file():
            log.info("writing a random %s checkpoint to %s", cfg.random_checkpoint, out)
            write_random_checkpoint(out, size=cfg.random_checkpoint, seed=0)
        return out
    return resolve_checkpoint(cfg.checkpoint or None)


class App:
    """Servicers of one role on one ServerHandle, with their engines started during warm-up."""

    def __init__(self, role: str, serve: ServeConfig, server: ServerConfig):
        if role not in ROLES:
            raise ValueError(f"role {role!r}: use one of {', '.join(ROLES)}")
        self.role = role
        self.serve_config = serve
        self.server_config = server
        self.stages = STAGE_ROLES if role == "all" else ((role,) if role in STAGE_ROLES else ())
        self.orchestrated = role in ("all", "orchestrator")
        names = [SERVICE_NAMES[s] for s in self.stages] + ([SERVICE_NAMES["orchestrator"]] if self.orchestrated else [])
        self.handle = ServerHandle(server, names)
        self.servicers: dict[str, object] = {}
        self.runners: dict = {}
        self.stage_clients = None
        self._register()

    def _register(self) -> None:
        from .coarse.servicer import CoarseServicer
        from .codec.servicer import CodecServicer
        from .fine.servicer import FineServicer
        from .semantic.servicer import SemanticServicer

        server, h = self.handle.server, self.handle
        # With the orchestrator in this process, its streams call these stages: they drain after it.
        inner = self.orchestrated
        if "semantic" in self.stages:
            self.servicers["semantic"] = s = SemanticServicer(None, h.admission("semantic", inner=inner), None)
            stages_pb2_grpc.add_SemanticServiceServicer_to_server(s, server)
        if "coarse" in self.stages:
            self.servicers["coarse"] = s = CoarseServicer(None, h.admission("coarse", inner=inner))
            stages_pb2_grpc.add_CoarseServiceServicer_to_server(s, server)
        if "fine" in self.stages:
            self.servicers["fine"] = s = FineServicer(None, h.admission("fine", inner=inner))
            stages_pb2_grpc.add_FineServiceServicer_to_server(s, server)
        if "codec" in self.stages:
            self.servicers["codec"] = s = CodecServicer(None, h.admission("codec", inner=inner))
            stages_pb2_grpc.add_CodecServiceServicer_to_server(s, server)
        if self.orchestrated:
            from .orchestrator.servicer import OrchestratorLimits, TextToSpeechServicer

            limits = OrchestratorLimits(self.serve_config.max_text_chars, self.serve_config.max_segments,
                                        self.serve_config.max_segment_tokens)
            self.servicers["orchestrator"] = s = TextToSpeechServicer(None, None, None, h.admission("orchestrator"),
                                                                      limits)
            tts_pb2_grpc.add_TextToSpeechServicer_to_server(s, server)

    async def warmup(self) -> None:
        await asyncio.to_thread(self._load)
        if self.orchestrated:
            self._connect_stages()

    def _load(self) -> None:
        from .bark.tokenizer import BarkTokenizer
        from .bark.voices import VoiceLibrary
        from .model.weights import load_checkpoint

        cfg = self.serve_config
        ckpt = load_checkpoint(checkpoint_dir(cfg))
        if self.stages:
            self._start_engines(ckpt)
        tokenizer = BarkTokenizer.from_dir(ckpt.tokenizer_dir()) if ckpt.tokenizer_dir() else None
        if "semantic" in self.servicers:
            self.servicers["semantic"].tokenizer = tokenizer
        if self.orchestrated:
            if tokenizer is None:
                raise ValueError(f"checkpoint {ckpt.root} has no tokenizer files (vocab.txt / tokenizer.json)")
            roots = [ckpt.voices_dir] if ckpt.voices_dir else []
            roots += [Path(p) for p in cfg.voices_dir.split(",") if p.strip()]
            orch = self.servicers["orchestrator"]
            orch.tokenizer = tokenizer
            orch.voices = VoiceLibrary(roots)

    def _start_engines(self, ckpt) -> None:
        from .stages.coarse import CoarseEngine
        from .stages.codec import CodecEngine
        from .stages.fine import FineEngine
        from .stages.models import ModelOptions, load_stage_models
        from .stages.runner import EngineRunner
        from .stages.semantic import SemanticEngine

        cfg = self.serve_config
        models = load_stage_models(ckpt, self.stages, ModelOptions(cfg.device, cfg.dtype, cfg.flash_attn))
        engines = {
            "semantic": lambda: SemanticEngine(models.semantic, cfg.max_batch),
            "coarse": lambda: CoarseEngine(models.coarse, cfg.max_batch),
            "fine": lambda: FineEngine(models.fine, cfg.max_batch),
            "codec": lambda: CodecEngine(models.codec, cfg.max_batch),
        }
        for stage in self.stages:
            runner = EngineRunner(engines[stage](), stage).start()
            self.runners[stage] = runner
            self.servicers[stage].runner = runner

    def _connect_stages(self) -> None:
        from .orchestrator.stage_clients import StageClients

        cfg = self.serve_config
        own = f"127.0.0.1:{self.handle.port}"
        self.stage_clients = StageClients(
            cfg.semantic_target or own, cfg.coarse_target or own, cfg.fine_target or own, cfg.codec_target or own,
            options=client_channel_options(self.server_config))
        self.servicers["orchestrator"].stages = self.stage_clients

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


def stage_channel_credentials() -> grpc.ChannelCredentials | None:
    return None
