"""The server-side half of the `barkstream` command: generate, checkpoint, serve.

The top-level entry point lives in the torch-free client package (client/cli.py)
and hands these commands over here, so `pip install barkstream` (client only)
still has a working `barkstream say`. Each command group registers itself from
its own module; none imports torch until its command runs.
"""

from __future__ import annotations

import argparse
import sys

from barkstream.client.suggest import SuggestingParser

from . import checkpoint, generate, serve


def build_parser() -> argparse.ArgumentParser:
    parser = SuggestingParser(prog="barkstream", description="Bark text-to-speech (server side)")
    sub = parser.add_subparsers(dest="command", required=True)
    generate.register(sub)
    checkpoint.register(sub)
    serve.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a server-side command; user mistakes end with one line on stderr and exit code 1."""
    from ..bark.voices import VoiceError
    from ..checkpoint.layout import CheckpointError  # torch-free: `serve orchestrator` must not load torch

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args) or 0)
    except (CheckpointError, VoiceError, ValueError, OSError) as e:
        print(f"barkstream {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
