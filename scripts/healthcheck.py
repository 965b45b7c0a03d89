#!/usr/bin/env python3
"""gRPC health check for a barkstream container (the image's HEALTHCHECK).

Asks the standard `grpc.health.v1.Health/Check` of the server in this container and exits 0 when
it answers SERVING, 1 otherwise (NOT_SERVING during model load and warm-up, and while draining).

The port: `--port`, else BARKSTREAM_PORT, else `--port N` / `--port=N` on PID 1's command line,
else the default port of the role PID 1 serves (`barkstream serve coarse` -> 50062).
TLS: when the server serves TLS (BARKSTREAM_TLS_CERT_FILE is set, or --tls), the check verifies it with
--ca (default BARKSTREAM_HEALTHCHECK_CA_FILE, else BARKSTREAM_TLS_CLIENT_CA_FILE) as --server-name (default
BARKSTREAM_HEALTHCHECK_SERVER_NAME), and presents the server's own certificate and key when the server asks
for client certificates (BARKSTREAM_TLS_CLIENT_CA_FILE). Kubernetes' native gRPC probes
(`grpc: {port: ...}`) need no script but speak plaintext only: with TLS, probes run this script instead.
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_PORTS = {"all": 50051, "orchestrator": 50051, "semantic": 50061, "coarse": 50062, "fine": 50063,
                 "codec": 50064}


def pid1_args() -> list[str]:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def port_from_command(args: list[str]) -> int | None:
    for i, arg in enumerate(args):
        if arg == "--port" and i + 1 < len(args):
            return int(args[i + 1])
        if arg.startswith("--port="):
            return int(arg.split("=", 1)[1])
    if "serve" in args:
        roles = [a for a in args[args.index("serve") + 1:] if a in DEFAULT_PORTS]
        return DEFAULT_PORTS[roles[0] if roles else "all"]
    return None


def open_channel(grpc, target: str, args: argparse.Namespace):
    if not args.tls:
        return grpc.insecure_channel(target)

    def read(path: str | None) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(read(args.ca), read(args.key), read(args.cert))
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(target, credentials, options=options)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int)
    p.add_argument("--service", default="", help="health service name ('' = the whole server)")
    p.add_argument("--timeout", type=float, default=3.0)
    env = os.environ.get
    p.add_argument("--tls", action="store_true", default=bool(env("BARKSTREAM_TLS_CERT_FILE")))
    p.add_argument("--ca", default=env("BARKSTREAM_HEALTHCHECK_CA_FILE") or env("BARKSTREAM_TLS_CLIENT_CA_FILE"))
    p.add_argument("--cert", default=env("BARKSTREAM_TLS_CERT_FILE") if env("BARKSTREAM_TLS_CLIENT_CA_FILE") else None)
    p.add_argument("--key", default=env("BARKSTREAM_TLS_KEY_FILE") if env("BARKSTREAM_TLS_CLIENT_CA_FILE") else None)
    p.add_argument("--server-name", default=env("BARKSTREAM_HEALTHCHECK_SERVER_NAME"))
    args = p.parse_args(argv)
    port = args.port or int(env("BARKSTREAM_PORT") or 0) or port_from_command(pid1_args()) or 50051

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = f"{args.host}:{port}"
    try:
        with open_channel(grpc, target, args) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
    except grpc.RpcError as e:
        print(f"{target}: {e.code().name}: {e.details()}")
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{target}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
