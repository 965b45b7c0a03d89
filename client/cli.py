"""The `barkstream` command. Torch-free: server-side commands are handed to
`barkstream.services.cli.main` only when they are asked for, so the light client
install keeps working without torch."""

from __future__ import annotations

import sys

SERVER_COMMANDS = ("generate", "checkpoint", "serve")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SERVER_COMMANDS:
        try:
            from barkstream.services.cli.main import main as server_main
        except ImportError as e:
            print(f"barkstream {argv[0]}: error: needs the server extra "
                  f"(pip install 'barkstream[server]'): {e}", file=sys.stderr)
            return 2
        return server_main(argv)
    from . import commands

    return commands.main(argv)


if __name__ == "__main__":
    sys.exit(main())
