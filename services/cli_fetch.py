"""`barkstream checkpoint fetch REPO DIR`: download a checkpoint snapshot into a plain directory, once.

For deployments that mount the checkpoint instead of reaching the hub from every server (the Kubernetes
Job in k8s/base/checkpoint-fetch.yaml runs `python -m barkstream.services.cli_fetch`): the files Bark runs on
(the same selection as the server's own hub download: configs, tokenizer, speaker embeddings and ONE
weights format) go to DIR, the checkpoint is loaded and verified (every tensor name and shape), and only then
DIR/.complete is written. A directory that already has `.complete` is left alone, so the command is safe to
run again (a re-applied Job, a pod restarted halfway: huggingface_hub resumes what it had).

Kept import-light at import time (argparse only), like the other CLI modules.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MARKER = ".complete"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("repo", nargs="?", default="suno/bark-small",
                        help="Hugging Face repository (default suno/bark-small; suno/bark for the large model)")
    parser.add_argument("out_dir", help="directory to fill (e.g. a shared volume); servers get --checkpoint DIR")
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: the main branch)")
    parser.add_argument("--force", action="store_true", help=f"fetch again even if {MARKER} is there")
    parser.add_argument("--no-verify", action="store_true", help="skip loading the checkpoint after the download")
    parser.set_defaults(func=run_fetch)
    return parser


def register(checkpoint_subparsers: Any) -> argparse.ArgumentParser:
    """Add `fetch` to the `barkstream checkpoint` subcommands (the object `register` in cli_checkpoint makes)."""
    return add_arguments(checkpoint_subparsers.add_parser(
        "fetch", help="download a checkpoint from the Hugging Face hub into a directory (once)",
        description=__doc__.splitlines()[0]))


def fetch(repo: str, out_dir: str | Path, revision: str | None = None, *, force: bool = False,
          verify: bool = True) -> Path:
    """Download `repo` into `out_dir` unless already complete; returns the directory."""
    import huggingface_hub

    from .model.hub import COMMON_PATTERNS, WEIGHT_PATTERNS
    from .model.weights_io import HF_WEIGHT_FILES

    out = Path(out_dir)
    marker = out / MARKER
    if marker.is_file() and not force:
        print(f"{out}: already complete ({marker.read_text().strip()})")
        return out
    marker.unlink(missing_ok=True)
    start = time.monotonic()
    for weights in WEIGHT_PATTERNS:  # safetensors when the repo has it, else pytorch_model.bin
        huggingface_hub.snapshot_download(repo, revision=revision, local_dir=out,
                                          allow_patterns=[*COMMON_PATTERNS, *weights])
        if any((out / name).is_file() for pair in HF_WEIGHT_FILES for name in pair):
            break
    else:
        raise FileNotFoundError(f"{repo}: no model.safetensors or pytorch_model.bin in the snapshot")
    if verify:
        from .model.weights import load_checkpoint

        load_checkpoint(out)  # raises CheckpointError on any missing or misshapen tensor
    marker.write_text(json.dumps({"repo": repo, "revision": revision or "main", "verified": verify,
                                  "seconds": round(time.monotonic() - start, 1)}) + "\n")
    print(f"{out}: fetched {repo} in {time.monotonic() - start:.0f} s")
    return out


def run_fetch(args: argparse.Namespace) -> int:
    from .model.weights_io import CheckpointError

    try:
        fetch(args.repo, args.out_dir, args.revision, force=args.force, verify=not args.no_verify)
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: `python -m barkstream.services.cli_fetch [REPO] DIR`."""
    args = add_arguments(argparse.ArgumentParser(prog="barkstream checkpoint fetch",
                                                 description=__doc__.splitlines()[0])).parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
