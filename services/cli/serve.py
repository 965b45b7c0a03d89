"""`barkstream serve [ROLE]`: the embedded server (all five services, one port) or one service."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from ..app import ROLES, App, ServeConfig
from ..common.config import ServerConfig, add_dataclass_args, add_server_args, dataclass_from_args
from ..telemetry import Telemetry, TelemetryConfig

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_PORTS = {"all": 50051, "orchestrator": 50051, "semantic": 50061, "coarse": 50062, "fine": 50063,
                 "codec": 50064}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gRPC services (default: all five in one process)",
                       description="Flags have BARKSTREAM_* environment equivalents (e.g. BARKSTREAM_PORT).")
    p.add_argument("role", nargs="?", default="all", choices=ROLES,
                   help="all (embedded, default) or one service for split deployments")
    add_server_args(p)
    add_dataclass_args(p.add_argument_group("model and pipeline"), ServeConfig)
    add_dataclass_args(p.add_argument_group("observability (traces and OTLP export: the standard OTEL_* "
                                            "variables, e.g. OTEL_EXPORTER_OTLP_ENDPOINT)"), TelemetryConfig)
    p.add_argument("--log-level", default=os.environ.get("BARKSTREAM_LOG_LEVEL", "INFO"), type=str.upper,
                   choices=LOG_LEVELS, metavar="LEVEL",
                   help=f"least severe log messages shown: {', '.join(LOG_LEVELS)} (env BARKSTREAM_LOG_LEVEL; "
                        "default %(default)s)")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = ServerConfig.from_args(args, os.environ, ServerConfig(port=DEFAULT_PORTS[args.role]))
    serve = dataclass_from_args(ServeConfig, args, os.environ)
    # The OTel SDK reads its OTEL_* variables here, once.
    telemetry = Telemetry.from_environment(args.role, dataclass_from_args(TelemetryConfig, args, os.environ),
                                           os.environ)

    async def main() -> None:
        app = App(args.role, serve, server, telemetry=telemetry)
        await app.serve()

    try:
        asyncio.run(main())
    finally:
        telemetry.shutdown()  # flush the last spans and metrics
    return 0
