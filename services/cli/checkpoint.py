"""`barkstream checkpoint random|verify|fetch`: write random checkpoints, verify real ones, fetch one to a directory.

Import-light (argparse only at import time): registering the command must not pull
torch into commands that do not need it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `checkpoint` command (subcommands `random`, `verify`, `fetch`) to an argparse subparsers object."""
    parser = subparsers.add_parser("checkpoint", help="write, verify or fetch Bark checkpoints")
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

    fetch = sub.add_parser(
        "fetch",
        help="download a checkpoint from the Hugging Face hub into a directory (once)",
        description="Download a checkpoint snapshot into a plain directory, verify it, mark it complete; "
        "a directory already marked complete is left alone (the Kubernetes checkpoint Job runs this).",
    )
    fetch.add_argument("repo", nargs="?", default="suno/bark-small",
                       help="Hugging Face repository (default suno/bark-small; suno/bark for the large model)")
    fetch.add_argument("out_dir", help="directory to fill (e.g. a shared volume); servers get --checkpoint DIR")
    fetch.add_argument("--revision", default=None, help="branch, tag or commit (default: the main branch)")
    fetch.add_argument("--force", action="store_true", help="fetch again even if the directory is marked complete")
    fetch.add_argument("--no-verify", action="store_true", help="skip loading the checkpoint after the download")
    fetch.set_defaults(func=run_fetch)
    return parser


def run_random(args: argparse.Namespace) -> int:
    from ..checkpoint.random_writer import write_random_checkpoint

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
    from ..checkpoint.layout import CheckpointError
    from ..checkpoint.load import load_checkpoint

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


def run_fetch(args: argparse.Namespace) -> int:
    from ..checkpoint.hub import COMPLETE_MARKER, fetch_snapshot
    from ..checkpoint.layout import CheckpointError

    try:
        done = fetch_snapshot(args.repo, args.out_dir, args.revision, force=args.force, verify=not args.no_verify)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if done.already_complete:
        print(f"{done.out_dir}: already complete ({(done.out_dir / COMPLETE_MARKER).read_text().strip()})")
    else:
        print(f"{done.out_dir}: fetched {args.repo} in {done.seconds:.0f} s")
    return 0
