"""`barkstream checkpoint ...`: write random checkpoints, verify real ones.

Kept import-light (argparse only at import time): the top-level CLI registers
this without pulling torch into commands that do not need it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `checkpoint` command (subcommands `random`, `verify`) to an argparse subparsers object."""
    parser = subparsers.add_parser("checkpoint", help="write or verify Bark checkpoints")
    sub = parser.add_subparsers(dest="checkpoint_command", required=True)

    rnd = sub.add_parser(
        "random",
        help="write a random-weight checkpoint in the suno/bark-small snapshot layout",
        description="Random weights make noise, not speech: for tests, benchmarks and demos without a download.",
    )
    rnd.add_argument("out_dir", help="directory to write (created if missing)")
    rnd.add_argument("--size", choices=("tiny", "small"), default="tiny", help="tiny: 2x64; small: bark-small sizes")
    rnd.add_argument("--seed", type=int, default=0)
    rnd.add_argument("--head-scale", type=float, default=None, help="output head multiplier (default: logit std ~5)")
    rnd.add_argument("--force", action="store_true", help="overwrite an existing checkpoint in out_dir")
    rnd.add_argument("--text-length-eos", action="store_true",
                     help="the semantic model ends each segment after ~12 tokens per text token + 20 (realistic "
                          "segment lengths for tests and benchmarks; random weights otherwise never stop)")
    rnd.set_defaults(func=run_random)

    ver = sub.add_parser("verify", help="load a checkpoint and check every tensor name and shape")
    ver.add_argument("path", help="HF snapshot directory or directory of Suno's text/coarse/fine .pt files")
    ver.add_argument("--codec", default=None, help="EnCodec weights (file or snapshot dir) for Suno's layout")
    ver.set_defaults(func=run_verify)

    from .cli_fetch import register as register_fetch

    register_fetch(sub)
    return parser


def run_random(args: argparse.Namespace) -> int:
    from .model.checkpoint import write_random_checkpoint

    try:
        out = write_random_checkpoint(
            args.out_dir, size=args.size, seed=args.seed, head_scale=args.head_scale, overwrite=args.force,
            text_length_eos=args.text_length_eos)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote random {args.size} checkpoint (seed {args.seed}) to {out}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from .model.weights import CheckpointError, load_checkpoint

    try:
        ckpt = load_checkpoint(args.path, codec_path=args.codec)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for kind in ("semantic", "coarse", "fine"):
        cfg = getattr(ckpt.config, kind)
        n = sum(t.numel() for k, t in ckpt.model_state(kind).items() if not k.startswith("lm_heads."))
        print(f"{kind:9s} {cfg.n_layer} layers x {cfg.n_embd}, {n / 1e6:.1f}M parameters")
    print(f"codec     {ckpt.codec_note}")
    print(f"layout {ckpt.layout}; tokenizer: {ckpt.tokenizer_dir() or 'none'}; voices: {ckpt.voices_dir or 'none'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: `python -m barkstream.services.cli_checkpoint checkpoint random DIR`."""
    parser = argparse.ArgumentParser(prog="barkstream")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
