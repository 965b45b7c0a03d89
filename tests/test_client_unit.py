"""The client SDK without a server: import graph, request building, errors, channel settings,
the stream protocol, audio files and the CLI's argument handling."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import textwrap
import wave

import grpc
import numpy as np
import pytest

import barkstream.client as bc
from barkstream.client import _channel, commands, errors
from barkstream.client._output import FileSink, StreamSink, infer_format
from barkstream.client._stream import StreamState, assemble
from barkstream.client.audio import decode, finalize_wav_header, to_pcm16
from barkstream.client.request import build_request, parse_format
from barkstream.v1 import tts_pb2

pytestmark = pytest.mark.timeout(60)


# ----------------------------------------------------------------------------- import graph
def test_client_import_graph_has_no_torch_and_no_services():
    """A fresh interpreter imports every client module (SDK, CLI) without torch, PyAV or the server code."""
    code = textwrap.dedent("""
        import sys
        import barkstream.client, barkstream.client.cli, barkstream.client.commands, barkstream.client.pb
        import barkstream.client.aio, barkstream.client.sync, barkstream.client.transcode
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchaudio", "encodec", "soxr", "av")
                     or m.startswith("barkstream.services"))
        print(",".join(bad))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"client imports server-side modules: {out.stdout}"


def test_cli_help_works_without_torch():
    code = "import sys; sys.modules['torch'] = None; from barkstream.client.cli import main; sys.exit(main(['--help']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for command in ("say", "voices", "serve", "generate", "checkpoint"):
        assert command in out.stdout


def test_public_surface_and_py_typed():
    import importlib.resources

    for name in bc.__all__:
        assert hasattr(bc, name), name
    assert bc.AudioEncoding.Value("AUDIO_ENCODING_WAV") == bc.AUDIO_ENCODING_WAV
    assert bc.pb.AudioChunk is tts_pb2.AudioChunk and bc.AudioChunk is not tts_pb2.AudioChunk
    assert importlib.resources.files("barkstream.client").joinpath("py.typed").is_file()
    assert issubclass(bc.DeadlineExceeded, TimeoutError) and issubclass(bc.InvalidRequest, ValueError)
    assert issubclass(bc.Unavailable, ConnectionError)


# ---------------------------------------------------------------------------- requests
def test_friendly_params_land_in_the_stage_messages():
    req = build_request("hi", voice="v2/en_speaker_1", seed=7, format="wav", sample_rate=16000, chunk_ms=40,
                        greedy=True, semantic_temp=0.6, coarse_temp=0.65, fine_temp=0.4, top_k=50, top_p=0.9,
                        min_eos_p=0.1, max_duration=2.5, request_id="r1")
    assert (req.text, req.voice, req.seed, req.sample_rate_hz, req.chunk_duration_ms, req.request_id) == \
        ("hi", "v2/en_speaker_1", 7, 16000, 40, "r1")
    assert req.encoding == tts_pb2.AUDIO_ENCODING_WAV
    sem, coarse, fine = req.params.semantic, req.params.coarse, req.params.fine
    assert sem.sampling.greedy and coarse.sampling.greedy and fine.greedy
    assert sem.sampling.temperature == 0.6 and coarse.sampling.temperature == 0.65 and fine.temperature == 0.4
    assert sem.sampling.top_k == coarse.sampling.top_k == 50
    assert sem.sampling.top_p == coarse.sampling.top_p == 0.9
    assert sem.min_eos_p == 0.1 and sem.max_gen_duration_s == 2.5


def test_unset_params_stay_unset_and_base_params_are_kept():
    req = build_request("hi")
    assert not req.HasField("seed") and not req.params.semantic.sampling.HasField("temperature")
    assert req.encoding == tts_pb2.AUDIO_ENCODING_UNSPECIFIED
    base = bc.SynthesisParams(coarse=bc.CoarseParams(max_coarse_history=300))
    req = build_request("hi", params=base, top_k=None, semantic_temp=0.5)
    assert req.params.coarse.max_coarse_history == 300 and req.params.semantic.sampling.temperature == 0.5
    assert not req.params.semantic.sampling.HasField("top_k")
    assert not base.semantic.sampling.HasField("temperature"), "the caller's params were modified"


def test_unknown_or_mistyped_params_are_type_errors():
    with pytest.raises(TypeError, match="did you mean 'greedy'"):
        build_request("hi", greedyy=True)
    with pytest.raises(TypeError, match="top_k"):
        build_request("hi", top_k="many")
    with pytest.raises(TypeError, match="text"):
        build_request(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        build_request("hi", seed=-1)


@pytest.mark.parametrize(("value", "expected"), [
    ("wav", tts_pb2.AUDIO_ENCODING_WAV), ("WAV", tts_pb2.AUDIO_ENCODING_WAV), ("pcm16", 1), ("s16le", 1),
    ("f32", 2), ("float32", 2), (tts_pb2.AUDIO_ENCODING_WAV, 3), ("AUDIO_ENCODING_FLOAT32_LE", 2), (None, 0),
    ("mp3", tts_pb2.AUDIO_ENCODING_MP3), ("ulaw", tts_pb2.AUDIO_ENCODING_MULAW),
    ("ogg", tts_pb2.AUDIO_ENCODING_OGG_OPUS), ("opus", tts_pb2.AUDIO_ENCODING_OPUS),
    ("FLAC", tts_pb2.AUDIO_ENCODING_FLAC), ("adts", tts_pb2.AUDIO_ENCODING_AAC)])
def test_formats(value, expected):
    assert parse_format(value) == expected


def test_bad_format_says_what_to_use():
    with pytest.raises(ValueError, match="wav, pcm16, f32, mulaw, alaw, ogg, opus, mp3, flac, aac"):
        parse_format("vorbis")
    with pytest.raises(ValueError):
        parse_format(99)


# ---------------------------------------------------------------------------------- errors
class FakeRpcError(grpc.RpcError):
    def __init__(self, code, details="", trailing=()):
        self._code, self._details, self._trailing = code, details, trailing

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailing


@pytest.mark.parametrize(("code", "cls"), [
    (grpc.StatusCode.INVALID_ARGUMENT, bc.InvalidRequest), (grpc.StatusCode.OUT_OF_RANGE, bc.InvalidRequest),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, bc.Overloaded), (grpc.StatusCode.UNAVAILABLE, bc.Unavailable),
    (grpc.StatusCode.DEADLINE_EXCEEDED, bc.DeadlineExceeded), (grpc.StatusCode.UNAUTHENTICATED, bc.Unauthenticated),
    (grpc.StatusCode.PERMISSION_DENIED, bc.PermissionDenied), (grpc.StatusCode.CANCELLED, bc.Cancelled),
    (grpc.StatusCode.INTERNAL, bc.ServerError), (grpc.StatusCode.UNIMPLEMENTED, bc.ServerError)])
def test_status_codes_map_to_typed_errors(code, cls):
    err = errors.from_rpc_error(FakeRpcError(code, "the server's words"))
    assert type(err) is cls and isinstance(err, bc.BarkstreamError)
    assert err.code is code and err.message.endswith("the server's words")
    assert str(err) == f"{code.name}: {err.message}"


def test_overloaded_exposes_the_retry_hint():
    err = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", (("retry-after-ms", "250"),)))
    assert isinstance(err, bc.Overloaded) and err.retry_after == 0.25 and err.retryable
    assert errors.from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")).retry_after is None
    bad = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "", (("retry-after-ms", "x"),)))
    assert bad.retry_after is None


def test_unavailable_names_the_target():
    err = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "Connection refused"), "h:1")
    assert err.message == "h:1: Connection refused"


def test_deadline_exceeded_has_one_wording_that_names_the_target():
    local = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), "h:1")
    server = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"), "h:1")
    assert local.message == server.message == "h:1: the call did not finish within its timeout"
    detailed = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "semantic stage"), "h:1")
    assert detailed.message == "h:1: the call did not finish within its timeout: semantic stage"


# --------------------------------------------------------------------------------- channel
@pytest.mark.parametrize(("target", "expected"), [
    ("localhost", "localhost:50051"), ("h:7", "h:7"), ("[::1]", "[::1]:50051"), ("[::1]:9", "[::1]:9"),
    ("::1", "[::1]:50051"), ("dns:///svc.ns:50051", "dns:///svc.ns:50051"), ("unix:/tmp/s", "unix:/tmp/s")])
def test_targets(target, expected):
    assert _channel.normalize_target(target) == expected


def test_bad_targets():
    for target in ("", "host:port"):
        with pytest.raises(ValueError, match="target"):
            _channel.normalize_target(target)


def test_service_config_retries_unavailable_and_health_checks():
    cfg = _channel.ChannelConfig("h:1", retry=bc.RetryPolicy(max_attempts=4, initial_backoff_s=0.1))
    options = dict(_channel.channel_options(cfg))
    sc = json.loads(options["grpc.service_config"])
    (method,) = sc["methodConfig"]
    assert method["name"] == [{"service": "barkstream.v1.TextToSpeech"}]
    assert method["retryPolicy"] == {"maxAttempts": 4, "initialBackoff": "0.100s", "maxBackoff": "5.000s",
                                     "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"]}
    assert sc["loadBalancingConfig"] == [{"round_robin": {}}]
    assert sc["healthCheckConfig"] == {"serviceName": "barkstream.v1.TextToSpeech"}
    assert options["grpc.keepalive_time_ms"] >= 10_000 and options["grpc.max_receive_message_length"] == 16 << 20
    assert options["grpc.primary_user_agent"].startswith("barkstream-python/")
    off = json.loads(dict(_channel.channel_options(_channel.ChannelConfig(retry=None, health_check=False)))[
        "grpc.service_config"])
    assert "retryPolicy" not in off["methodConfig"][0] and "healthCheckConfig" not in off


def test_user_options_override_ours():
    cfg = _channel.ChannelConfig(options=(("grpc.max_receive_message_length", 1234),))
    opts = _channel.channel_options(cfg)
    assert [v for k, v in opts if k == "grpc.max_receive_message_length"] == [1234]


def test_token_is_metadata_without_tls_and_call_credentials_with_tls():
    insecure = _channel.make_config("h:1", None, "tok", retry=None, health_check=True, keepalive_time_s=30,
                                    max_message_bytes=1 << 20, metadata={"x-tenant": "a"}, options=None)
    assert _channel.call_metadata(insecure) == (("authorization", "Bearer tok"), ("x-tenant", "a"))
    assert _channel.channel_credentials(insecure) is None
    secure = _channel.make_config("h:1", True, "tok", retry=None, health_check=True, keepalive_time_s=30,
                                  max_message_bytes=1 << 20, metadata=None, options=None)
    assert _channel.call_metadata(secure) == ()
    assert isinstance(_channel.channel_credentials(secure), grpc.ChannelCredentials)


def test_client_argument_errors():
    with pytest.raises(ValueError, match="lowercase"):
        bc.TTSClient("h:1", metadata={"X-Tenant": "a"})
    with pytest.raises(TypeError, match="tls"):
        bc.TTSClient("h:1", tls="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        bc.TTSClient("h:1", timeout=0)
    with pytest.raises(ValueError, match="keepalive"):
        bc.TTSClient("h:1", keepalive_time_s=1)
    with pytest.raises(ValueError, match="both"):
        bc.TLS.from_files(cert="c.pem")
    with bc.TTSClient("h", tls=True, token="t") as client:
        assert client.target == "h:50051" and "tls" in repr(client) and "t'" not in repr(client)


def test_tls_from_files(tmp_path):
    (tmp_path / "ca.pem").write_bytes(b"CA")
    tls = bc.TLS.from_files(ca=tmp_path / "ca.pem", server_name="svc")
    assert tls.root_certificates == b"CA" and tls.server_name == "svc"
    opts = dict(_channel.channel_options(_channel.ChannelConfig(tls=tls)))
    assert opts["grpc.ssl_target_name_override"] == "svc"


# ---------------------------------------------------------------------------- stream state
def header(encoding=tts_pb2.AUDIO_ENCODING_PCM_S16LE, segments=2, rate=24000, container=b""):
    return tts_pb2.SynthesizeResponse(header=tts_pb2.StreamHeader(
        request_id="r", encoding=encoding, sample_rate_hz=rate, channels=1, segment_count=segments,
        chunk_duration_ms=100, samples_per_chunk=2400, container_header=container))


def chunk(seq, segment, start, samples: np.ndarray, encoding=tts_pb2.AUDIO_ENCODING_PCM_S16LE):
    data = samples.astype("<f4").tobytes() if encoding == 2 else to_pcm16(samples).tobytes()
    return tts_pb2.SynthesizeResponse(chunk=tts_pb2.AudioChunk(
        sequence_number=seq, segment_index=segment, start_sample=start, data=data, num_samples=len(samples)))


def test_stream_state_follows_the_protocol():
    state = StreamState()
    a, b = np.linspace(-1, 1, 10, dtype=np.float32), np.full(6, 0.5, dtype=np.float32)
    assert state.accept(header(), 0.01) is None
    c0 = state.accept(chunk(0, 0, 0, a), 0.5)
    assert state.progress(0.6).segments_done == 0
    c1 = state.accept(chunk(1, 1, 10, b), 0.7)
    p = state.progress(1.0)
    assert (p.segments_done, p.segment_count, p.time_to_first_audio) == (1, 2, 0.5)
    assert p.audio_seconds == pytest.approx(16 / 24000) and p.real_time_factor == pytest.approx(1.0 / (16 / 24000))
    state.accept(tts_pb2.SynthesizeResponse(summary=tts_pb2.SynthesisSummary(total_samples=16)), 0.8)
    state.end()
    assert state.progress(1.0).segments_done == 2 and state.progress(1.0).finished
    assert (c0.elapsed, c1.start_time, c1.duration) == (0.5, 10 / 24000, 6 / 24000)
    np.testing.assert_allclose(c0.samples, a, atol=1 / 32767)
    audio = assemble(state, [c0, c1])
    assert len(audio) == 16 and audio.sample_rate == 24000 and audio.summary.total_samples == 16
    assert audio.time_to_first_audio == 0.5 and audio.duration == pytest.approx(16 / 24000)
    np.testing.assert_array_equal(audio.pcm16(), to_pcm16(np.concatenate([a, b])))


@pytest.mark.parametrize("messages", [
    [chunk(0, 0, 0, np.zeros(2))],                                   # audio before the header
    [header(), header()],                                            # two headers
    [header(), chunk(1, 0, 0, np.zeros(2))],                         # a gap in sequence numbers
    [header(encoding=2), chunk(0, 0, 0, np.zeros(2))],               # 2-byte samples in a float32 stream
])
def test_protocol_violations_are_server_errors(messages):
    state = StreamState()
    with pytest.raises(bc.ServerError, match="protocol"):
        for m in messages:
            state.accept(m, 0.0)


def test_a_stream_without_header_is_a_server_error():
    with pytest.raises(bc.ServerError):
        StreamState().end()


# ------------------------------------------------------------------------------------ audio
def test_audio_save_wav_and_raw(tmp_path):
    state = StreamState()
    state.accept(header(encoding=tts_pb2.AUDIO_ENCODING_FLOAT32_LE, segments=1, rate=16000), 0.0)
    x = np.array([0.0, 0.5, -0.5, 1.5], dtype=np.float32)
    audio = assemble(state, [state.accept(chunk(0, 0, 0, x, encoding=2), 0.1)])
    np.testing.assert_array_equal(audio.samples, x)  # float32 stays unclipped
    path = audio.save(tmp_path / "a.wav")
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 16000, 4)
        assert np.frombuffer(w.readframes(4), "<i2").tolist() == [0, 16384, -16384, 32767]
    assert audio.save(tmp_path / "a.f32").read_bytes() == x.astype("<f4").tobytes()
    with pytest.raises(ValueError, match=".wav"):
        audio.save(tmp_path / "a.mid")
    assert audio._repr_html_().startswith("<audio")


def test_decode_and_finalize_wav_header():
    np.testing.assert_array_equal(decode(np.array([32767, -32767], "<i2").tobytes(), 1), [1.0, -1.0])
    streamed = b"RIFF" + b"\xff" * 4 + b"WAVEfmt " + bytes(20) + b"data" + b"\xff" * 4
    fixed = finalize_wav_header(streamed, 100)
    assert fixed[4:8] == (36 + 100).to_bytes(4, "little") and fixed[40:44] == (100).to_bytes(4, "little")


# ---------------------------------------------------------------------------------- sinks
def test_file_sink_writes_a_part_file_then_a_finalized_wav(tmp_path):
    from barkstream.client.audio import WAV_HEADER_BYTES

    out = tmp_path / "x.wav"
    h = header(encoding=tts_pb2.AUDIO_ENCODING_WAV, segments=1,
               container=b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\xc0]\x00\x00\x80\xbb"
                         b"\x00\x00\x02\x00\x10\x00data\xff\xff\xff\xff").header
    assert len(h.container_header) == WAV_HEADER_BYTES
    sink = FileSink(out)
    sink.start(h)
    sink.write(np.arange(5, dtype="<i2").tobytes())
    assert not out.exists() and (tmp_path / "x.wav.part").exists()
    sink.finish()
    with wave.open(str(out)) as w:
        assert w.getnframes() == 5 and w.getframerate() == 24000
    assert not (tmp_path / "x.wav.part").exists()
    failed = FileSink(tmp_path / "y.wav")
    failed.start(h)
    failed.abort()
    assert list(tmp_path.iterdir()) == [out]


def test_stream_sink_writes_the_container_header_first():
    buf = io.BytesIO()
    sink = StreamSink(buf)
    sink.start(header(container=b"HDR").header)
    sink.write(b"ab")
    assert buf.getvalue() == b"HDRab"


def test_output_format_inference():
    assert infer_format("a.wav", None) == "wav" and infer_format("-", None) == "pcm16"
    assert infer_format("a.f32", None) == "f32" and infer_format("a.raw", None) == "pcm16"
    assert infer_format("a.bin", "f32") == "f32"
    with pytest.raises(ValueError, match="format"):
        infer_format("a.mid", None)
    with pytest.raises(ValueError, match="--format wav"):
        infer_format("a.wav", "pcm16")
    assert [infer_format(f"a{s}", None) for s in (".ogg", ".opus", ".mp3", ".flac", ".aac", ".ulaw", ".alaw")] == [
        "ogg", "ogg", "mp3", "flac", "aac", "mulaw", "alaw"]
    assert infer_format("-", "mulaw") == "mulaw" and infer_format("a.raw", "alaw") == "alaw"
    with pytest.raises(ValueError, match="--format mp3"):
        infer_format("a.mp3", "ogg")
    with pytest.raises(ValueError, match="--format ogg"):
        infer_format("-", "opus")  # raw packets have no byte stream to write


# ------------------------------------------------------------------------------------- CLI
def run_cli(argv, stdin_text: str | None = None, environ=None) -> tuple[int, str, str]:
    """commands.main in-process; argparse's own exits are caught like the shell would see them."""
    out, err = io.StringIO(), io.StringIO()
    stdin = io.StringIO(stdin_text or "")
    stdin.isatty = (lambda: stdin_text is None)  # type: ignore[method-assign]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = commands.main(argv, environ=environ or {}, stdin=stdin, stdout=out, stderr=err)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("argv", "stdin", "needle"), [
    (["say", "hi"], None, "-o is required"),
    (["say", "-o", "x.wav"], None, "no text"),
    (["say", "-o", "x.wav"], "   ", "text is empty"),
    (["say", "hi", "--text-file", "t.txt", "-o", "x.wav"], None, "not both"),
    (["say", "--text-file", "/nonexistent/t.txt", "-o", "x.wav"], None, "cannot read --text-file"),
    (["say", "hi", "-o", "x.mid"], None, "cannot tell the format"),
    (["say", "hi", "-o", "/nonexistent/dir/x.wav"], None, "does not exist"),
    (["say", "hi", "--seed", "abc", "-o", "x.wav"], None, "--seed"),
    (["say", "hi", "--seed", "-3", "-o", "x.wav"], None, "--seed"),
    (["say", "hi", "--format", "mp3", "-o", "x.wav"], None, "--format"),
    (["say", "hi", "--max-duration", "0", "-o", "x.wav"], None, "--max-duration"),
    (["say", "hi", "--timeout", "soon", "-o", "x.wav"], None, "--timeout"),
    (["say", "hi", "--cert", "c.pem", "-o", "x.wav"], None, "key"),
    (["say", "hi", "--target", "host:port", "-o", "x.wav"], None, "port"),
    (["say", "hi", "--bogus", "-o", "x.wav"], None, "--bogus"),
    (["dance"], None, "dance"),
    ([], None, "COMMAND"),
])
def test_bad_arguments_give_one_line_and_exit_2(argv, stdin, needle):
    code, out, err = run_cli(argv, stdin)
    assert code == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("barkstream") and "error:" in lines[0], err
    assert needle in lines[0]


@pytest.mark.parametrize(("argv", "hint"), [
    (["sya", "hi"], "did you mean say?"),
    (["say", "hi", "--voise", "v2/en_speaker_6", "-o", "x.wav"], "did you mean --voice?"),
    (["say", "hi", "--sample-rte=16000", "-o", "x.wav"], "did you mean --sample-rate?"),
    (["say", "hi", "--format", "wva", "-o", "x.wav"], "did you mean wav?"),
    (["voises"], "did you mean voices?"),
])
def test_a_typo_gets_a_did_you_mean(argv, hint):
    code, _, err = run_cli(argv)
    assert code == 2 and len(err.splitlines()) == 1 and f"; {hint} (see barkstream" in err, err


def test_no_suggestion_when_nothing_is_close():
    code, _, err = run_cli(["dance"])
    assert code == 2 and "did you mean" not in err


def test_server_commands_suggest_too(capsys):
    from barkstream.services.cli.main import build_parser

    for argv, hint in ((["serve", "--log-levle=debug"], "did you mean --log-level?"),
                       (["checkpoint", "randon", "x"], "did you mean random?")):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(argv)
        assert exit_.value.code == 2 and hint in capsys.readouterr().err
    assert build_parser().parse_args(["serve", "--log-level", "debug"]).log_level == "DEBUG"
    help_text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    assert "least severe log messages shown" in help_text


def test_refuses_to_write_audio_to_a_terminal():
    out = io.StringIO()
    out.isatty = lambda: True  # type: ignore[method-assign]
    err = io.StringIO()
    code = commands.main(["say", "hi", "-o", "-"], environ={}, stdin=io.StringIO(), stdout=out, stderr=err)
    assert code == 2 and "terminal" in err.getvalue() and len(err.getvalue().splitlines()) == 1


def test_environment_gives_target_and_token_defaults():
    args = commands.build_parser({"BARKSTREAM_TARGET": "tts:9", "BARKSTREAM_TOKEN": "s3"}).parse_args(["voices"])
    assert (args.target, args.token) == ("tts:9", "s3")
    args = commands.build_parser({}).parse_args(["voices", "--target", "x:1"])
    assert (args.target, args.token) == ("x:1", None)


def test_help_lists_server_commands():
    help_text = commands.build_parser({}).format_help()
    for command in ("say", "voices", "serve", "generate", "checkpoint"):
        assert command in help_text
