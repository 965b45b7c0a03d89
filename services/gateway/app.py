"""Routes of the gateway (Starlette): OpenAI's speech API, voices, models, the WebSocket session,
the page at `/`, and health for probes. Each handler translates HTTP to one orchestrator call."""

from __future__ import annotations

import time
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from ..telemetry import Telemetry
from .auth import HttpAuth
from .body import read_json_object
from .config import GatewayConfig
from .errors import ApiError
from .observe import GatewayObserver
from .respond import SpeechResponse
from .session import WebSocketSession
from .speech import parse_speech
from .upstream import Upstream

CREATED = int(time.time())


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), err.status, headers=err.headers())


class Gateway:
    """One gateway: its settings, its channel to the orchestrator, and the ASGI app (`.app`)."""

    def __init__(self, config: GatewayConfig, upstream: Upstream, auth: HttpAuth,
                 telemetry: Telemetry | None = None) -> None:
        self.config = config
        self.upstream = upstream
        self.auth = auth
        self.observer = GatewayObserver(telemetry or Telemetry())
        self.aliases = config.aliases
        self.draining = False
        self.page = resources.files(__package__).joinpath("static/index.html").read_bytes()
        self.app = Starlette(routes=[
            Route("/", self.index),
            Route("/v1/audio/speech", self.speech, methods=["POST"]),
            Route("/v1/audio/voices", self.voices),
            Route("/v1/models", self.models),
            Route("/v1/models/{model:path}", self.model),
            WebSocketRoute("/v1/audio/ws", self.websocket),
            Route("/healthz", self.live),
            Route("/readyz", self.ready),
        ], exception_handlers={ApiError: self._api_error, HTTPException: self._http_error})

    async def _api_error(self, request: Request, err: Exception) -> Response:
        assert isinstance(err, ApiError)
        return error_response(err)

    async def _http_error(self, request: Request, err: Exception) -> Response:
        assert isinstance(err, HTTPException)
        return error_response(ApiError(err.status_code, err.detail, "invalid_request_error", None,
                                       "not_found" if err.status_code == 404 else None))

    async def index(self, request: Request) -> Response:
        return HTMLResponse(self.page, headers={"cache-control": "no-cache"})

    async def speech(self, request: Request) -> Response | SpeechResponse:
        token = self.auth.token(request.headers)
        body = await read_json_object(request, self.config.max_body_bytes)
        speech = parse_speech(body, self.aliases, self.config.model_names)
        return SpeechResponse(self.upstream, self.observer, speech, token, dict(request.headers),
                              self.config.write_timeout_s, self.config.request_timeout_s or None)

    async def voices(self, request: Request) -> Response:
        """Kokoro-FastAPI's shape (`voices`: names) plus details and the aliases."""
        voices = await self.upstream.voices(self.auth.token(request.headers))
        names = {v.name for v in voices}
        return JSONResponse({
            "voices": [v.name for v in voices],
            "details": [{"name": v.name, "language": v.language, "description": v.description} for v in voices],
            "aliases": {k: v for k, v in self.aliases.items() if v in names},
        })

    def _model(self, name: str) -> dict:
        return {"id": name, "object": "model", "created": CREATED, "owned_by": "barkstream"}

    async def models(self, request: Request) -> Response:
        self.auth.token(request.headers)
        return JSONResponse({"object": "list", "data": [self._model(m) for m in self.config.model_names]})

    async def model(self, request: Request) -> Response:
        self.auth.token(request.headers)
        name = request.path_params["model"]
        if name not in self.config.model_names:
            raise ApiError(404, f"model {name!r} does not exist", "invalid_request_error", "model", "model_not_found")
        return JSONResponse(self._model(name))

    async def websocket(self, ws: WebSocket) -> None:
        await WebSocketSession(ws, self.upstream, self.observer, self.auth, self.aliases,
                               self.config.ws_first_message_timeout_s, self.config.write_timeout_s).run()

    async def live(self, request: Request) -> Response:
        """Liveness: the process answers (restarting it would not make the orchestrator come back)."""
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        """Readiness: not draining, and the orchestrator's health says SERVING."""
        if self.draining:
            return JSONResponse({"status": "draining"}, 503)
        if not await self.upstream.serving():
            return JSONResponse({"status": "orchestrator not serving"}, 503)
        return JSONResponse({"status": "ready"})
