"""The asyncio client: `AsyncTTSClient`, and `AsyncAudioStream`, what its `stream()` returns.

Cancellation is the point of an async client: cancelling the task that iterates a stream
(or leaving `async with client.stream(...)` early) cancels the RPC, and the server stops the
synthesis and frees its batch slot at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from types import TracebackType
from typing import Any

import grpc

from barkstream.v1 import tts_pb2, tts_pb2_grpc

from ._channel import DEFAULT_RETRY, DEFAULT_TARGET, MIB, ChannelOption, Credentials, RetryPolicy, open_aio_channel
from ._core import CLIENT_DEFAULT, ClientCore, Timeout
from ._stream import StreamView, assemble
from .audio import Audio, AudioChunk
from .errors import Cancelled, from_rpc_error
from .request import Format, build_config, build_request
from .session import AsyncSession, async_pieces


class AsyncAudioStream(StreamView, AsyncIterator[AudioChunk]):
    """Audio chunks of one Synthesize call, yielded as they arrive (`async for`).

        async with client.stream(text) as stream:
            async for chunk in stream:
                await player.write(chunk.data)

    Same attributes as the sync AudioStream; `wait_header()` and `collect()` are coroutines.
    """

    async def wait_header(self) -> tts_pb2.StreamHeader:
        while self._state.header is None:
            message = await self._next_message()
            if message is None:
                raise Cancelled("the stream was cancelled before its header arrived")
            self._state.accept(message, time.monotonic() - self._started)
        return self._state.header

    def __aiter__(self) -> AsyncAudioStream:
        return self

    async def __anext__(self) -> AudioChunk:
        while (message := await self._next_message()) is not None:
            chunk = self._state.accept(message, time.monotonic() - self._started)
            if chunk is not None:
                return chunk
        raise StopAsyncIteration

    async def _next_message(self) -> tts_pb2.SynthesizeResponse | None:
        if self.done:
            return None
        try:
            message = await self._call.read()
        except asyncio.CancelledError:
            self.cancel()  # the caller's task was cancelled: so is the call
            raise
        except grpc.RpcError as err:
            if self._cancelled:
                return None
            raise from_rpc_error(err, self._target) from None
        if message is grpc.aio.EOF:
            self._state.end()
            return None
        return message

    async def collect(self) -> Audio:
        """Read the rest of the stream into one Audio (chunks already iterated are not in it)."""
        chunks = [chunk async for chunk in self]
        return assemble(self._state, chunks)

    def cancel(self) -> None:
        if not self.done:
            self._cancelled = True
            self._call.cancel()

    async def __aenter__(self) -> AsyncAudioStream:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.cancel()


class AsyncTTSClient:
    """asyncio client of a barkstream server; the same arguments and methods as TTSClient.

        async with AsyncTTSClient("localhost:50051") as client:
            audio = await client.synthesize("Hello!")
            async for chunk in client.stream("A longer text. With sentences."):
                ...

    The channel opens on first use, inside the running event loop; use one client per loop.
    """

    def __init__(self, target: str = DEFAULT_TARGET, *, tls: bool | Credentials | None = None,
                 token: str | None = None, timeout: float | None = None, wait_for_ready: bool = False,
                 retry: RetryPolicy | None = DEFAULT_RETRY, health_check: bool = True,
                 keepalive_time_s: float = 30.0, max_message_bytes: int = 16 * MIB,
                 metadata: dict[str, str] | tuple[tuple[str, str], ...] | None = None,
                 options: list[ChannelOption] | tuple[ChannelOption, ...] | None = None) -> None:
        self._core = ClientCore(target, tls=tls, token=token, timeout=timeout, wait_for_ready=wait_for_ready,
                                retry=retry, health_check=health_check, keepalive_time_s=keepalive_time_s,
                                max_message_bytes=max_message_bytes, metadata=metadata, options=options)
        self._channel: grpc.aio.Channel | None = None
        self._stub: tts_pb2_grpc.TextToSpeechStub | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def target(self) -> str:
        return self._core.config.target

    def _get_stub(self) -> tts_pb2_grpc.TextToSpeechStub:
        if self._closed:
            raise RuntimeError("this AsyncTTSClient is closed")
        loop = asyncio.get_running_loop()  # a grpc.aio channel belongs to the loop it was made in
        if self._stub is None:
            self._channel = open_aio_channel(self._core.config)
            self._stub = tts_pb2_grpc.TextToSpeechStub(self._channel)
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("this AsyncTTSClient was first used in another event loop; "
                               "create one client per event loop")
        return self._stub

    def stream(self, text: str, *, voice: str | None = None, seed: int | None = None, format: Format = None,
               sample_rate: int | None = None, chunk_ms: int | None = None, timeout: Timeout = CLIENT_DEFAULT,
               wait_for_ready: bool | None = None, request_id: str | None = None,
               params: tts_pb2.SynthesisParams | None = None, **kwargs: Any) -> AsyncAudioStream:
        """Start synthesizing `text` (see TTSClient.stream); iterate with `async for`.

        Not a coroutine: the call starts here, so `client.stream(...)` can go straight into
        `async for` or `async with`. Call it from inside the running event loop.
        """
        request = build_request(text, voice=voice, seed=seed, format=format, sample_rate=sample_rate,
                                chunk_ms=chunk_ms, request_id=request_id, params=params, **kwargs)
        opts = self._core.call_options(timeout, wait_for_ready)
        started = time.monotonic()
        call = self._get_stub().Synthesize(request, **opts.kwargs())
        return AsyncAudioStream(call, self.target, started)

    async def synthesize(self, text: str, *, voice: str | None = None, seed: int | None = None,
                         format: Format = None, sample_rate: int | None = None, chunk_ms: int | None = None,
                         timeout: Timeout = CLIENT_DEFAULT, wait_for_ready: bool | None = None,
                         request_id: str | None = None, params: tts_pb2.SynthesisParams | None = None,
                         **kwargs: Any) -> Audio:
        """Synthesize `text` and return the whole Audio (same arguments as `stream`)."""
        async with self.stream(text, voice=voice, seed=seed, format=format, sample_rate=sample_rate,
                               chunk_ms=chunk_ms, timeout=timeout, wait_for_ready=wait_for_ready,
                               request_id=request_id, params=params, **kwargs) as stream:
            return await stream.collect()

    def session(self, *, timeout: Timeout = CLIENT_DEFAULT, wait_for_ready: bool | None = None,
                **config: Any) -> AsyncSession:
        """Open a real-time session (see TTSClient.session); use it with `async with`."""
        opts = self._core.call_options(timeout, wait_for_ready)
        call = self._get_stub().StreamingSynthesize(**opts.kwargs())
        return AsyncSession(call, build_config(**config), self.target)

    async def speak(self, pieces: AsyncIterable[str] | Iterable[str], *, timeout: Timeout = CLIENT_DEFAULT,
                    wait_for_ready: bool | None = None, **config: Any) -> AsyncIterator[AudioChunk]:
        """Speak text pieces as they come (an async LLM stream), yielding audio as it is made."""
        opts = self._core.call_options(timeout, wait_for_ready)
        config_pb = build_config(**config)
        call = self._get_stub().StreamingSynthesize(async_pieces(config_pb, pieces), **opts.kwargs())
        session = AsyncSession(call, config_pb, self.target, writes=False)
        try:
            async for item in session:
                if isinstance(item, AudioChunk):
                    yield item
        finally:
            session.cancel()

    async def list_voices(self, language: str | None = None, *, timeout: Timeout = CLIENT_DEFAULT,
                          wait_for_ready: bool | None = None) -> list[tts_pb2.Voice]:
        opts = self._core.call_options(timeout, wait_for_ready)
        try:
            response = await self._get_stub().ListVoices(tts_pb2.ListVoicesRequest(language=language or ""),
                                                         **opts.kwargs())
        except grpc.RpcError as err:
            raise from_rpc_error(err, self.target) from None
        return list(response.voices)

    async def close(self) -> None:
        """Close the channel; calls still running are cancelled."""
        self._closed = True
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None

    async def __aenter__(self) -> AsyncTTSClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return self._core.describe("AsyncTTSClient")
