"""`barkstream serve [ROLE]`: the embedded server (all five services, one port) or one service."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from ..app import ROLES, App, ServeConfig
from ..common.config import ServerConfig, add_dataclass_args, add_server_args, dataclass_from_args
from ..gateway.config import GatewayConfig
from ..telemetry import Telemetry, TelemetryConfig

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_PORTS = {"all": 50051, "orchestrator": 50051, "semantic": 50061, "coarse": 50062, "fine": 50063,
                 "codec": 50064, "gateway": 8080}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gRPC services (default: all five in one process)",
                       description="Flags have BARKSTREAM_* environment equivalents (e.g. BARKSTREAM_PORT).")
    p.add_argument("role", nargs="?", default="all", choices=(*ROLES, "gateway"),
                   help="all (embedded, default), one service for split deployments, or the HTTP gateway")
    add_server_args(p)
    add_dataclass_args(p.add_argument_group("model and pipeline"), ServeConfig)
    add_dataclass_args(p.add_argument_group("HTTP gateway (OpenAI speech API, WebSocket sessions, page)"),
                       GatewayConfig)
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

    gateway = dataclass_from_args(GatewayConfig, args, os.environ)

    async def main() -> None:
        from ..gateway.server import GatewayServer, serve_alone, serve_beside

        auth = {"auth_token_file": serve.auth_token_file, "auth_token": serve.auth_token, "telemetry": telemetry}
        if args.role == "gateway":
            await serve_alone(GatewayServer(gateway, server, gateway.target, **auth))
            return
        app = App(args.role, serve, server, telemetry=telemetry)
        if gateway.http_port and app.orchestrated:
            await serve_beside(app, gateway, server, **auth)
        else:
            await app.serve()

    try:
        asyncio.run(main())
    finally:
        telemetry.shutdown()  # flush the last spans and metrics
    return 0
