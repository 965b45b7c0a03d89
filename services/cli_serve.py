"""`barkstream serve [ROLE]`: the embedded server (all five services, one port) or one service."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from .app import ROLES, App, ServeConfig
from .common.config import ServerConfig, add_dataclass_args, add_server_args, dataclass_from_args

DEFAULT_PORTS = {"all": 50051, "orchestrator": 50051, "semantic": 50061, "coarse": 50062, "fine": 50063,
                 "codec": 50064}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gRPC services (default: all five in one process)",
                       description="Flags have BARKSTREAM_* environment equivalents (e.g. BARKSTREAM_PORT).")
    p.add_argument("role", nargs="?", default="all", choices=ROLES,
                   help="all (embedded, default) or one service for split deployments")
    add_server_args(p)
    add_dataclass_args(p.add_argument_group("model and pipeline"), ServeConfig)
    p.add_argument("--log-level", default=os.environ.get("BARKSTREAM_LOG_LEVEL", "INFO"))
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = ServerConfig.from_args(args, os.environ, ServerConfig(port=DEFAULT_PORTS[args.role]))
    serve = dataclass_from_args(ServeConfig, args, os.environ)

    async def main() -> None:
        app = App(args.role, serve, server)
        await app.serve()

    asyncio.run(main())
    return 0
