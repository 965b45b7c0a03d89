"""TLS on every server, and mutual TLS from the orchestrator to its stages (no torch).

Why mutual TLS inside the deployment: the stage services take token arrays and run the models
for whoever calls them, without the orchestrator's bearer-token check, validation or
per-client limits. A stage started with `--tls-client-ca-file` completes the TLS handshake
only with a client that shows a certificate issued by that CA (the orchestrator's, given with
`--stage-tls-cert-file/--stage-tls-key-file`), so nothing else on the network can use it.

Certificates and keys are read once, when the server is built; a missing or unreadable file
is a start-up error that names the flag, never a failure of the first request.

Flags (each has its `BARKSTREAM_*` environment twin, see config.py):
  every server:   --tls-cert-file --tls-key-file      serve TLS with this certificate chain
                  --tls-client-ca-file                 also require client certificates from this CA
  orchestrator:   --stage-tls-ca-file                  verify the stages' certificates with this CA
                  --stage-tls-cert-file --stage-tls-key-file   present this client certificate
                  --stage-tls-server-name              name to verify when it is not the target's host
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc

PEM_MARKER = b"-----BEGIN "


def read_pem(path: str, flag: str) -> bytes:
    """The PEM file at `path`; ValueError naming `flag` when it is missing or not PEM."""
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot read it ({e.strerror})") from None
    if PEM_MARKER not in data:
        raise ValueError(f"{flag} {path}: not a PEM file (expected '-----BEGIN ...')")
    return data


def check_pair(cert_file: str, key_file: str, what: str) -> None:
    """A certificate is useless without its key and vice versa: refuse half a configuration."""
    if bool(cert_file) != bool(key_file):
        raise ValueError(f"{what}: give both the certificate and its private key (or neither)")


def server_credentials(cert_file: str, key_file: str, client_ca_file: str = "") -> grpc.ServerCredentials | None:
    """TLS credentials for a server port, or None for plaintext.

    With `client_ca_file` the server requires and verifies a client certificate issued by that
    CA: a client without one fails the handshake (it sees UNAVAILABLE), before any RPC runs.
    """
    check_pair(cert_file, key_file, "--tls-cert-file/--tls-key-file")
    if not cert_file:
        if client_ca_file:
            raise ValueError("--tls-client-ca-file needs --tls-cert-file and --tls-key-file (mutual TLS is TLS)")
        return None
    chain = read_pem(cert_file, "--tls-cert-file")
    key = read_pem(key_file, "--tls-key-file")
    ca = read_pem(client_ca_file, "--tls-client-ca-file") if client_ca_file else None
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca, require_client_auth=ca is not None)


@dataclass(frozen=True)
class ChannelTLS:
    """Client-side TLS material for the orchestrator's channels to its stages."""

    root_certificates: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    certificate_chain: bytes | None = None
    server_name: str = ""

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.root_certificates, self.private_key, self.certificate_chain)

    def options(self) -> list[tuple[str, str]]:
        """Channel arguments: verify `server_name` instead of the target's host when it is set."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def stage_channel_tls(ca_file: str, cert_file: str, key_file: str, server_name: str = "", *,
                      own_cert_file: str = "") -> ChannelTLS | None:
    """TLS for the channels to the stages, or None for plaintext.

    TLS is on when a CA or a client certificate is given. `own_cert_file` is the embedded
    server's own certificate: its orchestrator dials its own TLS port, so TLS is on there too,
    and without a CA the certificate itself is the trust anchor (right for a self-signed one;
    give --stage-tls-ca-file when a CA issued it).
    """
    check_pair(cert_file, key_file, "--stage-tls-cert-file/--stage-tls-key-file")
    if not (ca_file or cert_file or own_cert_file):
        return None
    if ca_file:
        roots: bytes | None = read_pem(ca_file, "--stage-tls-ca-file")
    elif own_cert_file:
        roots = read_pem(own_cert_file, "--tls-cert-file")
    else:
        roots = None  # the system's roots
    key = read_pem(key_file, "--stage-tls-key-file") if key_file else None
    chain = read_pem(cert_file, "--stage-tls-cert-file") if cert_file else None
    return ChannelTLS(roots, key, chain, server_name)
