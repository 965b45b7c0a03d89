"""Where `barkstream say` writes audio: a file, or stdout as it arrives.

A file is written to `NAME.part` beside it and renamed at the end, so a failed or interrupted
synthesis never leaves a truncated file that looks complete; a WAV file gets its real sizes
patched into the streamed header (the compressed formats are complete as streamed). Stdout
gets every chunk flushed as soon as it arrives, so a player at the other end of a pipe starts
while the rest is still being generated.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO, Protocol

from barkstream.v1 import tts_pb2

from .audio import WAV_HEADER_BYTES, finalize_wav_header

STDOUT = "-"
# Files whose name says their format (the stream's bytes are that file as they arrive).
_FILE_FORMATS = {".wav": "wav", ".ogg": "ogg", ".opus": "ogg", ".mp3": "mp3", ".flac": "flac", ".aac": "aac",
                 ".ul": "mulaw", ".ulaw": "mulaw", ".al": "alaw", ".alaw": "alaw"}
# Raw sample files: any raw encoding may go there (the default is the first).
_RAW_FORMATS = {".pcm": "pcm16", ".raw": "pcm16", ".s16": "pcm16", ".f32": "f32"}


def infer_format(output: str, explicit: str | None) -> str:
    """The format to request for `output`; raises ValueError with what to pass instead."""
    suffix = "" if output == STDOUT else Path(output).suffix.lower()
    if explicit == "opus":
        raise ValueError("--format opus is raw Opus packets (for WebRTC, through the SDK); "
                         "for a file or a pipe use --format ogg (Opus in Ogg)")
    if explicit is not None:
        if suffix in _FILE_FORMATS and explicit != _FILE_FORMATS[suffix]:
            raise ValueError(f"{output}: a {suffix} file needs --format {_FILE_FORMATS[suffix]} "
                             "(or leave --format out)")
        return explicit
    if output == STDOUT:
        return "pcm16"
    formats = {**_FILE_FORMATS, **_RAW_FORMATS}
    if suffix not in formats:
        raise ValueError(f"{output}: cannot tell the format from the name; use {', '.join(formats)} "
                         "or pass --format")
    return formats[suffix]


class Sink(Protocol):
    def start(self, header: tts_pb2.StreamHeader) -> None: ...
    def write(self, data: bytes) -> None: ...
    def finish(self) -> None: ...
    def abort(self) -> None: ...


class StreamSink:
    """Raw audio (after the container header, if any) to a binary stream, flushed per chunk."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def start(self, header: tts_pb2.StreamHeader) -> None:
        if header.container_header:
            self.write(header.container_header)

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()

    def finish(self) -> None:
        self.out.flush()

    def abort(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.out.flush()


class FileSink:
    """A file written as the audio arrives, complete only once `finish` renames it into place."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + ".part")
        self._file: BinaryIO | None = None
        self._header = b""
        self._data_bytes = 0

    def start(self, header: tts_pb2.StreamHeader) -> None:
        self._file = open(self.part, "wb")  # noqa: SIM115 - closed in finish/abort
        self._header = bytes(header.container_header)
        self._file.write(self._header)

    def write(self, data: bytes) -> None:
        assert self._file is not None, "start() first"
        self._file.write(data)
        self._data_bytes += len(data)

    def finish(self) -> None:
        assert self._file is not None, "start() first"
        if len(self._header) >= WAV_HEADER_BYTES and self._header[:4] == b"RIFF":
            self._file.seek(0)
            self._file.write(finalize_wav_header(self._header, self._data_bytes))
        self._file.close()
        os.replace(self.part, self.path)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.part.unlink()


class Tee:
    """Several sinks fed the same stream (`say --play -o out.wav`: hear it and keep it)."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def start(self, header: tts_pb2.StreamHeader) -> None:
        for sink in self.sinks:
            sink.start(header)

    def write(self, data: bytes) -> None:
        for sink in self.sinks:
            sink.write(data)

    def finish(self) -> None:
        for sink in self.sinks:
            sink.finish()

    def abort(self) -> None:
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                sink.abort()
