"""Client-side commands (`say`, `voices`), built on the SDK like any application would be.

The environment is read once, here at the edge: BARKSTREAM_TARGET and BARKSTREAM_TOKEN give
the defaults of --target and --token. Every failure is one line on stderr and an exit status
scripts can branch on:

    0 done | 1 error | 2 bad arguments or a request the server refused as invalid |
    75 temporarily unavailable or overloaded (retry later) | 130 interrupted | 141 output pipe closed
"""

from __future__ import annotations

import argparse
import codecs
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from . import errors
from ._channel import DEFAULT_TARGET, TLS
from ._output import STDOUT, FileSink, Sink, StreamSink, Tee, infer_format
from ._progress import ProgressLine
from .play import PLAYABLE_FORMATS, PlaybackError, Player, require_sounddevice
from .request import FORMATS, PARAMS
from .suggest import SuggestingParser
from .sync import TTSClient

SERVER_COMMANDS = {
    "serve": "run the gRPC services (server install)",
    "generate": "synthesize offline, without a server (server install)",
    "checkpoint": "write or inspect a checkpoint (server install)",
}
SAY_EXAMPLES = """examples:
  barkstream say "Hello there!" -o hello.wav
  barkstream say "Hello there!" --play                               # needs pip install 'barkstream[play]'
  barkstream say "Hello there!" -o - | aplay -f S16_LE -r 24000     # plays while it is generated
  barkstream say --voice v2/en_speaker_6 --seed 7 --text-file story.txt -o story.wav
  cat story.txt | barkstream say --format f32 --sample-rate 48000 -o story.f32
  barkstream say "Hello there!" -o hello.ogg                          # also .mp3, .flac, .aac
  barkstream say "Your call is important." --format mulaw -o - > call.ulaw   # 8 kHz G.711 for telephony
  my-llm | barkstream say --stream-input -o - | aplay -f S16_LE -r 24000   # speaks while the text arrives
"""
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_TEMPFAIL, EXIT_INTERRUPTED, EXIT_PIPE = 0, 1, 2, 75, 130, 141


class UsageError(Exception):
    """A mistake in the command line, found after parsing (text sources, output name)."""


class _Parser(SuggestingParser):
    """argparse, but an error is one line (what is wrong, a "did you mean", where to look)."""

    exit_status = EXIT_USAGE


def _connection_args(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group("connection")
    g.add_argument("--target", default=environ.get("BARKSTREAM_TARGET", DEFAULT_TARGET), metavar="HOST:PORT",
                   help="server address (env BARKSTREAM_TARGET; default %(default)s)")
    g.add_argument("--token", default=environ.get("BARKSTREAM_TOKEN") or None,
                   help="bearer token (env BARKSTREAM_TOKEN); sent in plain metadata without TLS")
    g.add_argument("--tls", action="store_true", help="use TLS with the system's root certificates")
    g.add_argument("--ca", "--ca-file", dest="ca", metavar="FILE",
                   help="PEM CA certificate(s) to trust (implies --tls)")
    g.add_argument("--cert", "--cert-file", dest="cert", metavar="FILE",
                   help="client certificate for mutual TLS (with --key)")
    g.add_argument("--key", "--key-file", dest="key", metavar="FILE",
                   help="client private key for mutual TLS (with --cert)")
    g.add_argument("--server-name", metavar="NAME", help="name to verify in the server's certificate")
    g.add_argument("--timeout", type=_positive_float, metavar="S", help="give up after S seconds")
    g.add_argument("--wait", action="store_true",
                   help="wait (up to --timeout) for a server that is starting, instead of failing at once")
    return parent


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: use a positive number")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: use 0 or more")
    return value


def _sampling_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("sampling (unset: Suno's defaults)")
    for name, (_, meaning) in PARAMS.items():
        flag = "--" + name.replace("_", "-")
        if name == "greedy":
            g.add_argument(flag, action="store_true", default=None, help=meaning)
        elif name == "top_k":
            g.add_argument(flag, type=_non_negative_int, metavar="K", help=meaning)
        else:
            g.add_argument(flag, type=_positive_float if name != "min_eos_p" else float, metavar="X", help=meaning)


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    environ = os.environ if environ is None else environ
    conn = _connection_args(environ)
    parser = _Parser(prog="barkstream", description="Bark text-to-speech over gRPC.",
                     epilog="Server-side commands (serve, generate, checkpoint) need the server install: "
                            "pip install 'barkstream[server]'.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    say = sub.add_parser("say", parents=[conn], help="synthesize text to a file or to stdout",
                         description="Synthesize text; audio is written as it arrives.",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SAY_EXAMPLES)
    say.add_argument("text", nargs="*", help="the text (or --text-file, or pipe it on stdin)")
    say.add_argument("--text-file", metavar="FILE", help="read the text from FILE (- for stdin)")
    say.add_argument("-o", "--output", metavar="FILE", help="output file (.wav, .ogg/.opus, .mp3, .flac, .aac, "
                     ".ulaw, .alaw, .pcm, .f32), or - for audio on stdout as it arrives")
    say.add_argument("--play", action="store_true", help="play on the sound card while it streams (with or "
                     "without -o; needs the play extra: pip install 'barkstream[play]')")
    say.add_argument("--voice", metavar="NAME", help="voice preset (see `barkstream voices`)")
    say.add_argument("--seed", type=_non_negative_int, metavar="N", help="seed for reproducible audio")
    say.add_argument("--format", choices=list(FORMATS), help="audio encoding (default: from -o; pcm16 for -)")
    say.add_argument("--sample-rate", type=_non_negative_int, metavar="HZ",
                     help="output rate (default: 24000; 8000 for mulaw/alaw; 48000 for ogg)")
    say.add_argument("--bit-rate", type=_non_negative_int, metavar="BPS",
                     help="bits per second for ogg, mp3, aac (default: the codec's)")
    say.add_argument("--chunk-ms", type=_non_negative_int, metavar="MS", help="audio per chunk, 20..500")
    say.add_argument("--stream-input", action="store_true",
                     help="speak standard input as it arrives (a real-time session), e.g. an LLM's output")
    say.add_argument("--segment-schedule", choices=["latency-aware", "fixed"],
                     help="latency-aware (default): a short first segment, then growing ones; fixed: all full")
    say.add_argument("--max-segment-tokens", type=_non_negative_int, metavar="N",
                     help="text tokens per segment, 1..256 (default 48)")
    progress = say.add_mutually_exclusive_group()
    progress.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    progress.add_argument("--progress", action="store_true", help="progress line even when stderr is not a terminal")
    _sampling_args(say)
    say.set_defaults(run=run_say)

    voices = sub.add_parser("voices", parents=[conn], help="list the server's voice presets",
                            description="Print the voices: name, language, description (tab-separated).")
    voices.add_argument("--language", metavar="CODE", help="only this language, e.g. en")
    voices.set_defaults(run=run_voices)

    for name, meaning in SERVER_COMMANDS.items():
        sub.add_parser(name, help=f"server side: {meaning}; see `barkstream {name} --help`")
    return parser


def _client(args: argparse.Namespace) -> TTSClient:
    tls: TLS | bool | None = None
    if args.ca or args.cert or args.key or args.server_name:
        try:
            tls = TLS.from_files(ca=args.ca, cert=args.cert, key=args.key, server_name=args.server_name)
        except OSError as e:
            raise UsageError(f"cannot read {e.filename}: {e.strerror}") from None
        except ValueError as e:
            raise UsageError(str(e)) from None
    elif args.tls:
        tls = True
    try:
        return TTSClient(args.target, tls=tls, token=args.token, timeout=args.timeout, wait_for_ready=args.wait)
    except ValueError as e:
        raise UsageError(str(e)) from None


def read_text(args: argparse.Namespace, stdin: TextIO) -> str:
    if args.text and args.text_file:
        raise UsageError("give the text once: as TEXT or with --text-file, not both")
    if args.text:
        text = " ".join(args.text)
    elif args.text_file == STDOUT or (args.text_file is None and not stdin.isatty()):
        text = stdin.read()
    elif args.text_file:
        try:
            text = Path(args.text_file).read_text(encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot read --text-file {args.text_file}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"--text-file {args.text_file} is not UTF-8 text") from None
    else:
        raise UsageError("no text: give TEXT, --text-file FILE, or pipe the text on stdin")
    if not text.strip():
        raise UsageError("the text is empty")
    return text


def _format(args: argparse.Namespace) -> str | None:
    try:
        return infer_format(args.output or "", args.format) if args.output else None
    except ValueError as e:
        raise UsageError(str(e)) from None


def _sinks(args: argparse.Namespace, io: _IO, fmt: str | None) -> Sink:
    sinks: list[Sink] = []
    if args.play:
        if fmt is not None and fmt not in PLAYABLE_FORMATS:
            raise UsageError(f"--play plays {', '.join(PLAYABLE_FORMATS)}, not {fmt}")
        require_sounddevice()  # before any synthesis: a missing extra is said at once
        sinks.append(Player())
    if args.output or not args.play:
        sinks.append(_sink(args.output, io.stdout.isatty(), io.stdout_binary))
    return sinks[0] if len(sinks) == 1 else Tee(sinks)


def _sink(output: str | None, stdout_is_tty: bool, binary_stdout: object) -> Sink:
    if not output:
        raise UsageError("-o is required: a file (-o out.wav), - for raw audio on stdout, or --play")
    if output == STDOUT:
        if stdout_is_tty:
            raise UsageError("refusing to write audio to a terminal: pipe it (-o - | aplay -f S16_LE -r 24000) "
                             "or use -o FILE")
        return StreamSink(binary_stdout)  # type: ignore[arg-type]
    parent = Path(output).parent
    if not parent.is_dir():
        raise UsageError(f"-o {output}: directory {parent} does not exist")
    return FileSink(output)


def stdin_pieces(stdin: TextIO, size: int = 4096) -> Iterator[str]:
    """Standard input as it arrives: whatever a read returns now, not whole lines."""
    try:
        fd = stdin.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is None:
        while piece := stdin.read(size):
            yield piece
        return
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while data := os.read(fd, size):
        yield decoder.decode(data)
    yield decoder.decode(b"", final=True)


def run_say_stream_input(args: argparse.Namespace, io: _IO, fmt: str | None, sink: Sink, params: dict) -> int:
    if args.text or args.text_file:
        raise UsageError("--stream-input reads standard input: give no TEXT or --text-file")
    started = False
    with _client(args) as client, client.session(
            pieces=stdin_pieces(io.stdin), voice=args.voice, seed=args.seed, format=fmt,
            sample_rate=args.sample_rate or None, chunk_ms=args.chunk_ms or None, bit_rate=args.bit_rate or None,
            schedule=args.segment_schedule,
            max_segment_tokens=args.max_segment_tokens or None, **params) as session:
        try:
            for chunk in session.audio():
                if not started:
                    sink.start(session.header)
                    started = True
                sink.write(chunk.data)
            if not started:
                sink.start(session.header)
                started = True
            sink.finish()
        except BaseException:
            if started:
                sink.abort()
            raise
    return EXIT_OK


def run_say(args: argparse.Namespace, io: _IO) -> int:
    if args.stream_input:
        fmt = _format(args)
        sink = _sinks(args, io, fmt)
        return run_say_stream_input(args, io, fmt, sink, {name: getattr(args, name) for name in PARAMS})
    text = read_text(args, io.stdin)
    fmt = _format(args)
    sink = _sinks(args, io, fmt)
    params = {name: getattr(args, name) for name in PARAMS}
    progress = ProgressLine(io.stderr, enabled=not args.quiet and (args.progress or io.stderr.isatty()))
    destination = "stdout" if args.output == STDOUT else args.output or "the sound card"
    started = False
    with _client(args) as client, client.stream(
            text, voice=args.voice, seed=args.seed, format=fmt, sample_rate=args.sample_rate or None,
            chunk_ms=args.chunk_ms or None, bit_rate=args.bit_rate or None, schedule=args.segment_schedule,
            max_segment_tokens=args.max_segment_tokens or None, **params) as stream:
        try:
            sink.start(stream.wait_header())
            started = True
            progress.update(stream.progress(), force=True)
            for chunk in stream:
                sink.write(chunk.data)
                progress.update(stream.progress())
            sink.finish()
        except BaseException:
            progress.clear()
            if started:
                sink.abort()
            raise
        progress.finish(stream.progress(), destination)
    return EXIT_OK


def run_voices(args: argparse.Namespace, io: _IO) -> int:
    with _client(args) as client:
        voices = client.list_voices(args.language)
    for v in voices:
        io.stdout.write("\t".join((v.name, v.language, v.description)).rstrip("\t") + "\n")
    if not voices and io.stderr.isatty():
        io.stderr.write("no voices" + (f" for language {args.language!r}" if args.language else "") + "\n")
    return EXIT_OK


class _IO:
    """The process's streams, injectable for tests."""

    def __init__(self, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> None:
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.stdout_binary = getattr(stdout, "buffer", stdout)


def _exit_code(err: errors.BarkstreamError) -> int:
    if isinstance(err, errors.InvalidRequest):
        return EXIT_USAGE
    if err.retryable:
        return EXIT_TEMPFAIL
    return EXIT_ERROR


def _hint(err: errors.BarkstreamError, target: str) -> str:
    if isinstance(err, errors.Overloaded) and err.retry_after is not None:
        return f" (retry in {err.retry_after:g} s)"
    if isinstance(err, errors.Unavailable) and "failed to connect" in err.message.lower():
        return f" (is a server running at {target}? start one with `barkstream serve`, or pass --wait)"
    return ""


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None, stdin: TextIO | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    io = _IO(stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr)
    args = build_parser(environ).parse_args(list(argv))
    prog = f"barkstream {args.command}"
    if not hasattr(args, "run"):  # a server command reached the client (cli.py normally hands it over)
        io.stderr.write(f"{prog}: error: needs the server install: pip install 'barkstream[server]'\n")
        return EXIT_USAGE
    try:
        return args.run(args, io)
    except UsageError as e:
        io.stderr.write(f"{prog}: error: {e} (see {prog} --help)\n")
        return EXIT_USAGE
    except errors.BarkstreamError as e:
        io.stderr.write(f"{prog}: error: {e}{_hint(e, args.target)}\n")
        return _exit_code(e)
    except PlaybackError as e:
        io.stderr.write(f"{prog}: error: {e}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        io.stderr.write(f"{prog}: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_PIPE


def _silence_stdout() -> None:
    """The reader went away (a player closed): point stdout at /dev/null so exit does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
