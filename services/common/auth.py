"""Bearer-token authentication and per-client stream limits at the public front door (no torch).

The orchestrator is the only service a user talks to, so this is where callers are checked:
`FrontDoorInterceptor` wraps the protected services (TextToSpeech; in the embedded server the
stage services on the same port too) and leaves grpc.health.v1 and reflection open, so load
balancers and Kubernetes probes need no token.

- Tokens come from `--auth-token-file` (one per line, `#` comments) and/or the
  `BARKSTREAM_AUTH_TOKEN` secret, read once at start-up. The presented token is compared with
  every configured one through SHA-256 digests and `hmac.compare_digest`, without stopping at
  the first match, so the time taken says nothing about how much of a token was right, nor
  which one matched, nor its length.
- No token or a wrong one: UNAUTHENTICATED with a message that says which, before the servicer
  (and so before any model work) runs.
- A client is its token (a short digest, never the token, so it can be logged) or, with
  authentication off, its peer host. `ClientStreamLimiter` caps the Synthesize streams one
  client runs at once: beyond it RESOURCE_EXHAUSTED with a `retry-after-ms` hint, so one
  caller cannot take every slot of the orchestrator's global limit.
- The embedded server's orchestrator reaches its own stage services through its own port; it
  authenticates with an internal random token made at start-up (`internal_token`), so the
  stage services are not an unauthenticated side door there.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc

from .admission import RETRY_AFTER_METADATA_KEY

log = logging.getLogger(__name__)

AUTHORIZATION_KEY = "authorization"
BEARER_PREFIX = "bearer "
INTERNAL_CLIENT = "internal"

Metadata = Sequence[tuple[str, str | bytes]] | None


def load_tokens(token_file: str = "", token: str = "") -> tuple[str, ...]:
    """The accepted tokens: the file's non-empty, non-comment lines, then `token`.

    A configured file that cannot be read or holds no token is a start-up error: a server that
    silently ran without authentication would be worse than one that does not start.
    """
    tokens: list[str] = []
    if token_file:
        try:
            lines = Path(token_file).expanduser().read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--auth-token-file {token_file}: cannot read it ({e})") from None
        tokens += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not tokens:
            raise ValueError(f"--auth-token-file {token_file}: holds no token (one token per line)")
    if token.strip():
        tokens.append(token.strip())
    for t in tokens:
        if any(c.isspace() for c in t) or not t.isprintable():
            raise ValueError("an auth token contains whitespace or control characters")
    return tuple(dict.fromkeys(tokens))


def internal_token() -> str:
    """A fresh random token for a process's calls to itself (never logged, never stored)."""
    return secrets.token_urlsafe(32)


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token if isinstance(token, bytes) else token.encode()).digest()


def bearer_token(metadata: Metadata) -> str | None:
    """The token of an `authorization: Bearer <token>` header, or None when there is none."""
    for key, value in metadata or ():
        if key.lower() != AUTHORIZATION_KEY:
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if text[:len(BEARER_PREFIX)].lower() == BEARER_PREFIX:
            return text[len(BEARER_PREFIX):].strip()
        return ""  # an authorization header in another scheme: present, but not a bearer token
    return None


class TokenVerifier:
    """Matches a presented bearer token against the configured ones in constant time."""

    def __init__(self, tokens: Iterable[str], internal: str | None = None) -> None:
        self._known: list[tuple[bytes, str]] = [(_digest(t), f"token:{_digest(t).hex()[:12]}") for t in tokens]
        if internal is not None:
            self._known.append((_digest(internal), INTERNAL_CLIENT))
        if not self._known:
            raise ValueError("authentication needs at least one token")

    def identify(self, token: str) -> str | None:
        """The client's name for `token`, or None when it matches no configured token."""
        presented = _digest(token)
        found = None
        for digest, name in self._known:  # no early exit: every token is compared every time
            if hmac.compare_digest(presented, digest) and found is None:
                found = name
        return found


def peer_host(peer: str) -> str:
    """`ipv4:10.0.0.7:51234` -> `ipv4:10.0.0.7` (one client, whichever connection it uses)."""
    if peer.startswith(("ipv4:", "ipv6:")) and ":" in peer[5:]:
        return peer.rsplit(":", 1)[0]
    return peer


class ClientStreamLimiter:
    """Counts each client's open streams; single event loop, no locks. Empty clients are forgotten."""

    def __init__(self, max_per_client: int, retry_after_ms: int = 1000) -> None:
        if max_per_client < 1:
            raise ValueError(f"max_per_client={max_per_client}: use 1 or more")
        self.max_per_client = max_per_client
        self.retry_after_ms = retry_after_ms
        self._active: dict[str, int] = {}

    def active(self, client: str | None = None) -> int:
        """Open streams of `client`, or of all clients (for tests and metrics)."""
        return self._active.get(client, 0) if client is not None else sum(self._active.values())

    @contextlib.asynccontextmanager
    async def slot(self, client: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        if self._active.get(client, 0) >= self.max_per_client:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this client already runs {self.max_per_client} concurrent streams (the per-client limit); "
                f"retry after {self.retry_after_ms} ms",
                trailing_metadata=((RETRY_AFTER_METADATA_KEY, str(self.retry_after_ms)),))
        self._active[client] = self._active.get(client, 0) + 1
        try:
            yield
        finally:
            left = self._active[client] - 1
            if left:
                self._active[client] = left
            else:
                del self._active[client]


def _service(method: str) -> str:
    """`/barkstream.v1.TextToSpeech/Synthesize` -> `barkstream.v1.TextToSpeech`."""
    return method.lstrip("/").split("/", 1)[0]


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that only aborts (the servicer never runs)."""

    async def unary(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def streaming(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield  # pragma: no cover - abort raises; this makes the function an async generator

    kw = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, **kw)
    return grpc.unary_unary_rpc_method_handler(unary, **kw)


def _limited(handler: grpc.RpcMethodHandler, limiter: ClientStreamLimiter,
             client: str | None) -> grpc.RpcMethodHandler:
    """`handler` (unary-stream or stream-stream) run inside one of `client`'s slots."""
    inner: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]] = (
        handler.unary_stream or handler.stream_stream)

    async def behavior(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with limiter.slot(client or peer_host(context.peer()), context):
            # aclosing: an abandoned stream closes the servicer's generator now, not at GC time.
            async with contextlib.aclosing(inner(request_or_iterator, context)) as responses:
                async for response in responses:
                    yield response

    make = (grpc.unary_stream_rpc_method_handler if handler.unary_stream is not None
            else grpc.stream_stream_rpc_method_handler)
    return make(behavior, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


class FrontDoorInterceptor(grpc.aio.ServerInterceptor):
    """Authentication and per-client limits for the services in `protected`.

    verifier: None = no authentication (then a client is its peer host).
    limiter / limited_methods: full method names (`/pkg.Service/Method`, unary-stream or
      stream-stream) whose streams count against each client's limit.
    """

    def __init__(self, protected: Collection[str], verifier: TokenVerifier | None = None,
                 limiter: ClientStreamLimiter | None = None, limited_methods: Collection[str] = ()) -> None:
        self.protected = frozenset(protected)
        self.verifier = verifier
        self.limiter = limiter
        self.limited_methods = frozenset(limited_methods)

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
            handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or _service(method) not in self.protected:
            return handler
        client: str | None = None
        if self.verifier is not None:
            token = bearer_token(handler_call_details.invocation_metadata)
            if not token:
                log.info("refused %s: no bearer token", method)
                return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED,
                                "missing bearer token: send metadata `authorization: Bearer <token>` "
                                "(barkstream say --token, or TTSClient(token=...))")
            client = self.verifier.identify(token)
            if client is None:
                log.info("refused %s: unknown bearer token", method)
                return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
        if (self.limiter is not None and method in self.limited_methods and client != INTERNAL_CLIENT
                and (handler.unary_stream is not None or handler.stream_stream is not None)):
            return _limited(handler, self.limiter, client)
        return handler


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata that presents `token` (nothing for None)."""
    return ((AUTHORIZATION_KEY, f"Bearer {token}"),) if token else ()


def front_door(protected: Collection[str], stream_methods: Collection[str], *, token_file: str = "", token: str = "",
               max_streams_per_client: int = 0, retry_after_ms: int = 1000,
               internal: bool = False) -> tuple[list[grpc.aio.ServerInterceptor], str | None]:
    """The interceptors an orchestrator needs, and its internal token (None when unused).

    protected: full service names that need a token; stream_methods: the full names of the
      streaming methods counted per client (`/barkstream.v1.TextToSpeech/Synthesize`, its sessions).
    internal: the process also serves the stages its orchestrator calls (embedded server).
    """
    tokens = load_tokens(token_file, token)
    own = internal_token() if tokens and internal else None
    verifier = TokenVerifier(tokens, own) if tokens else None
    limiter = ClientStreamLimiter(max_streams_per_client, retry_after_ms) if max_streams_per_client else None
    if verifier is None and limiter is None:
        return [], None
    if verifier is not None:
        log.info("bearer-token authentication on for %s (%d token(s))", ", ".join(sorted(protected)), len(tokens))
    return [FrontDoorInterceptor(protected, verifier, limiter, list(stream_methods))], own
