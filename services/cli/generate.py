"""`barkstream generate`: text to a WAV file, offline, in this process (no server)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from barkstream.client.audio import to_pcm16, wav_bytes

from ..bark import constants as C


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="text to a WAV file, offline, in this process")
    p.add_argument("text", help="text to speak (long text is split into segments)")
    p.add_argument("--checkpoint", help="local checkpoint directory (HF snapshot or Suno .pt files); "
                                        "default: suno/bark-small from the Hugging Face cache/hub")
    p.add_argument("--voice", help="voice preset name (e.g. v2/en_speaker_6) or a .npz file")
    p.add_argument("--seed", type=int, help="random seed (same seed, same audio)")
    p.add_argument("--greedy", action="store_true", help="argmax at every stage (deterministic)")
    p.add_argument("--semantic-temp", type=float)
    p.add_argument("--coarse-temp", type=float)
    p.add_argument("--fine-temp", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--min-eos-p", type=float, default=C.DEFAULT_MIN_EOS_P)
    p.add_argument("--max-duration", type=float, metavar="SECONDS",
                   help="stop each segment's semantic generation after this many seconds")
    p.add_argument("--segment-schedule", choices=["latency-aware", "fixed"], default="latency-aware",
                   help="latency-aware: a short first segment, then growing ones (the server's default); "
                        "fixed: every segment packed up to --max-segment-tokens")
    p.add_argument("--max-segment-tokens", type=int, default=48, metavar="N",
                   help="text tokens per segment, 1..256 (256 with fixed: Suno's single pass for up to 256 tokens)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--quantize", choices=["none", "int8"], default="none",
                   help="int8: weight-only int8 transformer linears (faster decode; not token-exact)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("-o", "--output", required=True, help="output WAV path")
    p.add_argument("--dump-codes", metavar="NPZ", help="also write semantic/coarse/fine codes to this .npz")
    p.set_defaults(func=run_generate)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = C.SAMPLE_RATE) -> None:
    """16-bit PCM mono WAV: what every player reads."""
    Path(path).write_bytes(wav_bytes(to_pcm16(audio), sample_rate))


class StageProgress:
    """One status line on a terminal; silent when stderr is not one."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.start = time.monotonic()

    def __call__(self, stage: str, index: int, count: int) -> None:
        if self.enabled:
            elapsed = time.monotonic() - self.start
            sys.stderr.write(f"\rsegment {index + 1}/{count}: {stage:<8} done  [{elapsed:6.1f} s]")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def load_voice(spec: str | None, voices_dir: Path | None, allow_files: bool = False):
    """A voice by name from the checkpoint's speaker embeddings, or (offline CLI) an .npz path."""
    from ..bark.voices import VoiceLibrary

    if not spec:
        return None
    return VoiceLibrary([voices_dir] if voices_dir else []).load(spec, allow_file=allow_files)


def run_generate(args: argparse.Namespace) -> int:
    from ..bark.params import GenerationParams
    from ..bark.schedule import Schedule, SegmentPolicy
    from ..bark.tokenizer import BarkTokenizer
    from ..checkpoint.hub import resolve_checkpoint
    from ..checkpoint.load import load_checkpoint
    from ..stages.models import ModelOptions, load_stage_models
    from ..stages.pipeline import SynthesisRequest, Synthesizer

    if not args.text.strip():
        raise ValueError("text is empty: give some words to speak")
    params = GenerationParams.build(
        greedy=args.greedy, semantic_temp=args.semantic_temp, coarse_temp=args.coarse_temp,
        fine_temp=args.fine_temp, top_k=args.top_k, top_p=args.top_p, min_eos_p=args.min_eos_p,
        max_duration_s=args.max_duration,
    )
    schedule = Schedule.FIXED if args.segment_schedule == "fixed" else Schedule.LATENCY_AWARE
    segmentation = SegmentPolicy(schedule, args.max_segment_tokens)
    ckpt = load_checkpoint(resolve_checkpoint(args.checkpoint))
    voice = load_voice(args.voice, ckpt.voices_dir, allow_files=True)
    options = ModelOptions(device=args.device, dtype=args.dtype, quantize=args.quantize)
    models = load_stage_models(ckpt, options=options)
    # Keep only the checkpoint's facts: its tensors (memory-mapped file pages) are no longer needed.
    ckpt = models.checkpoint
    synth = Synthesizer(models, BarkTokenizer.from_dir(ckpt.tokenizer_dir()), segmentation=segmentation)
    progress = StageProgress(sys.stderr.isatty())
    try:
        result = synth.generate(SynthesisRequest(args.text, voice, params, args.seed), progress)
    finally:
        progress.close()
    write_wav(args.output, result.audio)
    if args.dump_codes:
        segs = result.segments
        np.savez(
            args.dump_codes,
            semantic=np.concatenate([s.semantic for s in segs]).astype(np.int64),
            coarse=np.concatenate([s.coarse for s in segs], axis=1).astype(np.int64),
            fine=np.concatenate([s.fine for s in segs], axis=1).astype(np.int64),
            segment_lengths=np.array([s.fine.shape[1] for s in segs], dtype=np.int64),
        )
    return 0
