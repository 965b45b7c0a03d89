"""The blocking client: `TTSClient`, and `AudioStream`, what its `stream()` returns."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

import grpc

from barkstream.v1 import tts_pb2, tts_pb2_grpc

from ._channel import DEFAULT_RETRY, DEFAULT_TARGET, MIB, ChannelOption, Credentials, RetryPolicy, open_channel
from ._core import CLIENT_DEFAULT, ClientCore, Timeout
from ._stream import StreamView, assemble
from .audio import Audio, AudioChunk
from .errors import Cancelled, from_rpc_error
from .request import Format, build_config, build_request
from .session import Session


class AudioStream(StreamView, Iterator[AudioChunk]):
    """Audio chunks of one Synthesize call, yielded as they arrive.

    Iterate it, or use it as a context manager so that leaving the block early (a break, an
    exception, Ctrl-C) cancels the call on the server at once:

        with client.stream(text) as stream:
            for chunk in stream:
                player.write(chunk.data)
        print(stream.summary.real_time_factor)

    Errors raise the typed exceptions of barkstream.client.errors, also mid-stream.
    """

    def wait_header(self) -> tts_pb2.StreamHeader:
        """Block until the header arrives (sample rate, encoding, WAV header, segment count)."""
        while self._state.header is None:
            message = self._next_message()
            if message is None:
                raise Cancelled("the stream was cancelled before its header arrived")
            self._state.accept(message, time.monotonic() - self._started)
        return self._state.header

    # -- iteration
    def __iter__(self) -> AudioStream:
        return self

    def __next__(self) -> AudioChunk:
        while (message := self._next_message()) is not None:
            chunk = self._state.accept(message, time.monotonic() - self._started)
            if chunk is not None:
                return chunk
        raise StopIteration

    def _next_message(self) -> tts_pb2.SynthesizeResponse | None:
        """The next message, or None once the stream has ended or was cancelled by the caller."""
        if self.done:
            return None
        try:
            return next(self._call)
        except StopIteration:
            self._state.end()
            return None
        except grpc.RpcError as err:
            if self._cancelled:
                return None
            raise from_rpc_error(err, self._target) from None

    def collect(self) -> Audio:
        """Read the rest of the stream into one Audio (chunks already iterated are not in it)."""
        chunks = list(self)
        return assemble(self._state, chunks)

    # -- lifetime
    def cancel(self) -> None:
        """Stop the call now; the server frees its work. Iteration then ends quietly."""
        if not self.done:
            self._cancelled = True
            self._call.cancel()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cancel()


class TTSClient:
    """Blocking client of a barkstream server. Thread-safe; share one per process and target.

        with TTSClient("localhost:50051") as client:
            client.synthesize("Hello!", voice="v2/en_speaker_6").save("hello.wav")

    target: HOST:PORT (port 50051 when left out) or any gRPC target (dns:///, unix:...).
    tls: None (plaintext), True (system CA roots), barkstream.client.TLS(...) (a private CA,
      mutual TLS), or grpc.ChannelCredentials.
    token: sent as `authorization: Bearer <token>` (call credentials over TLS, plain metadata
      without TLS, where gRPC refuses call credentials).
    timeout: default deadline of every call, in seconds (None: no deadline). A stream's
      deadline covers the whole stream.
    wait_for_ready: default for calls: wait (until the deadline) for a server that is not up
      or not SERVING yet, instead of failing at once with Unavailable.
    retry: UNAVAILABLE retry policy (None: no retries). health_check: only send calls to
      servers whose health says SERVING. metadata: extra headers for every call.
      options: extra grpc channel arguments (they win over the client's).
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
        self._channel = open_channel(self._core.config)
        self._stub = tts_pb2_grpc.TextToSpeechStub(self._channel)

    @property
    def target(self) -> str:
        return self._core.config.target

    def stream(self, text: str, *, voice: str | None = None, seed: int | None = None, format: Format = None,
               sample_rate: int | None = None, chunk_ms: int | None = None, timeout: Timeout = CLIENT_DEFAULT,
               wait_for_ready: bool | None = None, request_id: str | None = None,
               params: tts_pb2.SynthesisParams | None = None, **kwargs: Any) -> AudioStream:
        """Start synthesizing `text`; iterate the result for AudioChunks as they are produced.

        voice: a name from list_voices() (None: Bark picks a random speaker). seed: same seed,
        same request, same server -> same audio. format: 'pcm16' (default), 'wav' (write
        `stream.wait_header().container_header` first) or 'f32'. sample_rate: Hz (None: 24000).
        chunk_ms: audio per chunk, 20..500 (None: 100). Sampling keywords: greedy, semantic_temp,
        coarse_temp, fine_temp, top_k, top_p, min_eos_p, max_duration (seconds per segment);
        params: a full SynthesisParams, the keywords applied on top.
        """
        request = build_request(text, voice=voice, seed=seed, format=format, sample_rate=sample_rate,
                                chunk_ms=chunk_ms, request_id=request_id, params=params, **kwargs)
        opts = self._core.call_options(timeout, wait_for_ready)
        started = time.monotonic()
        call = self._stub.Synthesize(request, **opts.kwargs())
        return AudioStream(call, self.target, started)

    def synthesize(self, text: str, *, voice: str | None = None, seed: int | None = None,
                   format: Format = None, sample_rate: int | None = None, chunk_ms: int | None = None,
                   timeout: Timeout = CLIENT_DEFAULT, wait_for_ready: bool | None = None,
                   request_id: str | None = None, params: tts_pb2.SynthesisParams | None = None,
                   **kwargs: Any) -> Audio:
        """Synthesize `text` and return the whole Audio (same arguments as `stream`)."""
        with self.stream(text, voice=voice, seed=seed, format=format, sample_rate=sample_rate, chunk_ms=chunk_ms,
                         timeout=timeout, wait_for_ready=wait_for_ready, request_id=request_id, params=params,
                         **kwargs) as stream:
            return stream.collect()

    def session(self, *, pieces: Iterable[str] | None = None, timeout: Timeout = CLIENT_DEFAULT,
                wait_for_ready: bool | None = None, **config: Any) -> Session:
        """Open a real-time session: send text pieces while audio streams back (see client.session).

        pieces: the whole input as an iterator of text pieces, read as they come (then send, flush
        and clear are not used). config: the keywords of `stream` (voice, seed, format, sample_rate,
        chunk_ms, request_id, params, sampling keywords, schedule, max_segment_tokens, voice_prompt,
        return_voice_prompt) and max_wait_ms. The timeout covers the whole session.
        """
        opts = self._core.call_options(timeout, wait_for_ready)
        return Session(self._stub.StreamingSynthesize, build_config(**config), opts.kwargs(), self.target,
                       pieces=pieces)

    def speak(self, pieces: Iterable[str], *, timeout: Timeout = CLIENT_DEFAULT, wait_for_ready: bool | None = None,
              **config: Any) -> Iterator[AudioChunk]:
        """Speak text pieces as they come (an LLM's token stream), yielding audio as it is made."""
        session = self.session(pieces=pieces, timeout=timeout, wait_for_ready=wait_for_ready, **config)
        try:
            yield from session.audio()
        finally:
            session.cancel()

    def list_voices(self, language: str | None = None, *, timeout: Timeout = CLIENT_DEFAULT,
                    wait_for_ready: bool | None = None) -> list[tts_pb2.Voice]:
        """The voice presets the server has (optionally of one language, e.g. "en")."""
        opts = self._core.call_options(timeout, wait_for_ready)
        try:
            response = self._stub.ListVoices(tts_pb2.ListVoicesRequest(language=language or ""), **opts.kwargs())
        except grpc.RpcError as err:
            raise from_rpc_error(err, self.target) from None
        return list(response.voices)

    def close(self) -> None:
        """Close the channel; calls still running are cancelled."""
        self._channel.close()

    def __enter__(self) -> TTSClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return self._core.describe("TTSClient")
