"""Bearer tokens at the HTTP door: the same token files and the same constant-time check as the
gRPC front door (services/common/auth.py). The caller's token is also passed on to the orchestrator,
so its per-client stream limits count this caller, not the gateway.

Browsers cannot set headers on a WebSocket; they offer the token as a subprotocol instead:
`new WebSocket(url, ["barkstream", "bearer." + token])` (the server answers "barkstream").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..common.auth import TokenVerifier, bearer_token, load_tokens
from .errors import ApiError

WS_SUBPROTOCOL = "barkstream"
TOKEN_SUBPROTOCOL_PREFIX = "bearer."


class HttpAuth:
    """verifier None: authentication off (a presented token is still passed on)."""

    def __init__(self, token_file: str = "", token: str = "") -> None:
        tokens = load_tokens(token_file, token)
        self.verifier = TokenVerifier(tokens) if tokens else None

    def token(self, headers: Mapping[str, str], subprotocols: Sequence[str] = ()) -> str | None:
        """The caller's token, checked: ApiError 401 when auth is on and it is missing or wrong."""
        token = bearer_token([("authorization", headers["authorization"])] if "authorization" in headers else [])
        for proto in subprotocols:
            if not token and proto.startswith(TOKEN_SUBPROTOCOL_PREFIX):
                token = proto[len(TOKEN_SUBPROTOCOL_PREFIX):]
        if self.verifier is None:
            return token or None
        if not token:
            raise ApiError(401, "missing bearer token: send `Authorization: Bearer <token>` (WebSocket from a "
                                "browser: the subprotocol `bearer.<token>`)", "invalid_request_error", None,
                           "invalid_api_key")
        if self.verifier.identify(token) is None:
            raise ApiError(401, "invalid bearer token", "invalid_request_error", None, "invalid_api_key")
        return token
