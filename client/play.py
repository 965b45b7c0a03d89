"""Play a synthesis on the sound card while it streams (`barkstream say --play`, the `[play]` extra).

The output library is sounddevice (PortAudio). It is optional: the light client must install and
run without a sound card, so it is imported only when playing starts, and its absence (or
PortAudio's, or an output device's) is one clear message instead of a traceback.

PortAudio pulls audio from a callback on its own thread. `PlaybackBuffer` is what that callback
reads: the network side pushes chunks as they arrive, the device side takes exactly the bytes it
asks for, and silence fills an underrun (the network is behind) instead of stopping the device.
`Player` is a sink for `barkstream say` (start / write / finish / abort) that owns the device;
`play(stream)` plays an SDK stream with it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from barkstream.v1 import tts_pb2

PLAY_INSTALL = (
    "--play needs the play extra: pip install 'barkstream[play]' (sounddevice), and the PortAudio library "
    "(Debian/Ubuntu: apt-get install libportaudio2; macOS: brew install portaudio; Windows: bundled)"
)
# encoding -> (sounddevice dtype, bytes per sample); WAV chunks carry PCM 16-bit after the RIFF header.
_PLAYABLE = {
    tts_pb2.AUDIO_ENCODING_PCM_S16LE: ("int16", 2),
    tts_pb2.AUDIO_ENCODING_WAV: ("int16", 2),
    tts_pb2.AUDIO_ENCODING_FLOAT32_LE: ("float32", 4),
}
PLAYABLE_FORMATS = ("pcm16", "wav", "f32")


class PlaybackError(Exception):
    """Audio cannot be played here: the extra, PortAudio or an output device is missing."""


class PlaybackBuffer:
    """Bytes from the network to the device callback; thread-safe, silence on underrun."""

    def __init__(self, frame_bytes: int) -> None:
        self.frame_bytes = frame_bytes
        self._chunks: deque[bytes] = deque()
        self._head = 0  # bytes of _chunks[0] already played
        self._lock = threading.Lock()
        self._closed = False
        self.drained = threading.Event()  # set once closed and every byte has been played
        self.underruns = 0
        self.silences: list[tuple[int, int]] = []  # (offset, bytes) of the silence put into the output
        self._out = 0  # bytes handed to the device so far

    def push(self, data: bytes) -> None:
        if data:
            with self._lock:
                self._chunks.append(bytes(data))

    def close(self) -> None:
        """No more audio: the device plays what is left, then `drained` is set."""
        with self._lock:
            self._closed = True
            if not self._chunks:
                self.drained.set()

    def fill(self, out: Any) -> bool:
        """Write len(out) bytes into `out` (audio, then silence); False once everything has been played."""
        want, pos = len(out), 0
        with self._lock:
            while pos < want and self._chunks:
                chunk = self._chunks[0]
                n = min(want - pos, len(chunk) - self._head)
                out[pos : pos + n] = chunk[self._head : self._head + n]
                pos, self._head = pos + n, self._head + n
                if self._head == len(chunk):
                    self._chunks.popleft()
                    self._head = 0
            done = self._closed and not self._chunks
        if pos < want:
            out[pos:want] = bytes(want - pos)
            self._note_silence(self._out + pos, want - pos)
            if not done:
                self.underruns += 1
        self._out += want
        if done:
            self.drained.set()
        return not done


    def _note_silence(self, start: int, n: int) -> None:
        if self.silences and sum(self.silences[-1]) == start:  # one run of silence, however many pulls
            self.silences[-1] = (self.silences[-1][0], self.silences[-1][1] + n)
        else:
            self.silences.append((start, n))


def require_sounddevice() -> Any:
    """The sounddevice module, or a PlaybackError that says how to install it (asked before any synthesis)."""
    try:
        import sounddevice
    except ImportError as e:
        raise PlaybackError(PLAY_INSTALL) from e
    except OSError as e:  # sounddevice is there, the PortAudio library is not
        raise PlaybackError(f"{PLAY_INSTALL}: {e}") from e
    return sounddevice


def open_sounddevice(**kwargs: Any) -> Any:
    """A started sounddevice.RawOutputStream, or a PlaybackError that says what is missing."""
    sounddevice = require_sounddevice()
    try:
        stream = sounddevice.RawOutputStream(**kwargs)
        stream.start()
    except (sounddevice.PortAudioError, ValueError) as e:
        raise PlaybackError(f"no audio output device to play on ({e}); write a file with -o instead") from e
    return stream


class Player:
    """Plays a Synthesize stream as it arrives; `open_stream` builds the device (sounddevice by default)."""

    def __init__(self, open_stream: Callable[..., Any] = open_sounddevice, timeout_s: float = 600.0) -> None:
        self.open_stream = open_stream
        self.timeout_s = timeout_s
        self.buffer: PlaybackBuffer | None = None
        self._stream: Any = None

    def start(self, header: tts_pb2.StreamHeader) -> None:
        if header.encoding not in _PLAYABLE:
            name = tts_pb2.AudioEncoding.Name(header.encoding)
            raise PlaybackError(f"--play plays {', '.join(PLAYABLE_FORMATS)}, not {name}")
        dtype, width = _PLAYABLE[header.encoding]
        channels = header.channels or 1
        self.buffer = PlaybackBuffer(width * channels)
        self._stream = self.open_stream(samplerate=header.sample_rate_hz, channels=channels, dtype=dtype,
                                        callback=self._callback)

    def _callback(self, outdata: Any, frames: int, time: Any, status: Any) -> None:
        """PortAudio's thread asks for `frames` frames; after the last byte it gets silence until `finish`."""
        assert self.buffer is not None
        self.buffer.fill(outdata)

    def write(self, data: bytes) -> None:
        assert self.buffer is not None, "start() first"
        self.buffer.push(data)

    def finish(self) -> None:
        """Wait until the device has played the last byte, then close it."""
        assert self.buffer is not None, "start() first"
        self.buffer.close()
        self.buffer.drained.wait(self.timeout_s)
        if self._stream is not None:
            self._stream.stop()  # returns once the device's own buffers have played
        self._close()

    def abort(self) -> None:
        if self._stream is not None:
            self._stream.abort()
            self._close()

    def _close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def play(stream: Any, open_stream: Callable[..., Any] = open_sounddevice) -> None:
    """Play `client.stream(...)` as it arrives; returns once the last sample has been played.

    A failed stream raises its error here after stopping the sound at once.
    """
    player = Player(open_stream)
    player.start(stream.wait_header())
    try:
        for chunk in stream:
            player.write(chunk.data)
    except BaseException:
        player.abort()
        raise
    player.finish()
