"""What every server does with every call, whatever the service: the request log line, and requests
that are not valid protobuf (invalid UTF-8 in a string field) answered INVALID_ARGUMENT.

The embedded server (all five services on one port) serves the stage calls; an orchestrator-only
App with `--log-format json` in front of it shows the JSON line.
"""

from __future__ import annotations

import json
import logging
import shlex

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpc_health.v1.health_pb2_grpc import HealthStub

from barkstream.v1 import stages_pb2, tts_pb2, tts_pb2_grpc

from .conftest import EmbeddedServer
from .service_helpers import ONE_SEGMENT, VOICE, poll, rpc_error, synth_request, synthesize

pytestmark = pytest.mark.timeout(120)

REQUESTS = "barkstream.requests"
SYNTHESIZE = "barkstream.v1.TextToSpeech/Synthesize"
STAGE_METHODS = ("barkstream.v1.SemanticService/Generate", "barkstream.v1.CoarseService/Generate",
                 "barkstream.v1.FineService/Generate", "barkstream.v1.CodecService/Decode")
BAD_STRINGS = {"invalid UTF-8": b"\xff\xfe", "UTF-8-encoded lone surrogate": b"\xed\xa0\x80"}


def plain_fields(message: str) -> dict[str, str]:
    word, *pairs = shlex.split(message)
    assert word == "request"
    return dict(pair.split("=", 1) for pair in pairs)


def lines(caplog, predicate) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == REQUESTS and predicate(r.getMessage())]


# -- the request log ---------------------------------------------------------------------------------
def test_one_plain_line_per_synthesize_and_debug_lines_on_the_stages(server, caplog):
    caplog.set_level(logging.DEBUG, logger=REQUESTS)
    text = ONE_SEGMENT
    r = synthesize(server.target, synth_request(text, VOICE, request_id="log-plain-1"))
    assert r.summary is not None
    assert poll(lambda: len(lines(caplog, lambda m: "log-plain-1" in m)) == 5), caplog.text
    [line] = lines(caplog, lambda m: SYNTHESIZE in m and "log-plain-1" in m)
    assert line.levelno == logging.INFO
    f = plain_fields(line.getMessage())
    assert (f["method"], f["status"], f["request_id"], f["voice"]) == (SYNTHESIZE, "OK", "log-plain-1", VOICE)
    assert f["peer"].startswith(("ipv4:127.0.0.1:", "ipv6:")), f["peer"]
    assert (int(f["text_chars"]), int(f["segments"])) == (len(text), 1)
    assert abs(float(f["time_to_first_audio_ms"]) - r.summary.time_to_first_audio_ms) < 1.0
    assert abs(float(f["real_time_factor"]) - r.summary.real_time_factor) < 0.01
    assert float(f["duration_ms"]) >= float(f["time_to_first_audio_ms"]) > 0
    stage_lines = lines(caplog, lambda m: "log-plain-1" in m and SYNTHESIZE not in m)
    assert sorted(plain_fields(s.getMessage())["method"] for s in stage_lines) == sorted(STAGE_METHODS)
    assert {s.levelno for s in stage_lines} == {logging.DEBUG}
    assert {plain_fields(s.getMessage())["status"] for s in stage_lines} == {"OK"}


def test_stage_lines_stay_out_of_an_info_log(server, caplog):
    caplog.set_level(logging.INFO, logger=REQUESTS)
    synthesize(server.target, synth_request(ONE_SEGMENT, VOICE, request_id="log-info-1"))
    assert poll(lambda: lines(caplog, lambda m: "log-info-1" in m))
    assert [plain_fields(r.getMessage())["method"] for r in lines(caplog, lambda m: "log-info-1" in m)] == \
        [SYNTHESIZE]


@pytest.fixture()
def json_orchestrator(server, tiny_checkpoint_dir):
    """An orchestrator-only App logging JSON, using the embedded server's stages."""
    from barkstream.services.app import ServeConfig
    from barkstream.services.common.config import ServerConfig

    stages = {f"{s}_target": server.target for s in ("semantic", "coarse", "fine", "codec")}
    orchestrator = EmbeddedServer("orchestrator", ServeConfig(checkpoint=str(tiny_checkpoint_dir), **stages),
                                  ServerConfig(host="127.0.0.1", port=0, drain_grace_s=5.0, log_format="json"))
    yield orchestrator
    orchestrator.stop()


def test_json_lines_for_a_finished_and_a_failed_request(json_orchestrator, caplog):
    caplog.set_level(logging.INFO, logger=REQUESTS)
    target = json_orchestrator.target
    synthesize(target, synth_request(ONE_SEGMENT, VOICE, request_id="log-json-1"))
    err = rpc_error(lambda: synthesize(target, synth_request(ONE_SEGMENT, "v2/no_such_voice")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    with grpc.insecure_channel(target) as channel:
        tts_pb2_grpc.TextToSpeechStub(channel).ListVoices(tts_pb2.ListVoicesRequest(), timeout=10)
    assert poll(lambda: len(lines(caplog, lambda m: f'"{json_orchestrator.port}' not in m)) >= 3)
    records = [json.loads(r.getMessage()) for r in lines(caplog, lambda m: m.startswith("{"))]
    ok = [r for r in records if r["request_id"] == "log-json-1"]
    assert len(ok) == 1 and ok[0]["status"] == "OK" and ok[0]["voice"] == VOICE and ok[0]["segments"] == 1
    assert ok[0]["event"] == "request" and ok[0]["method"] == SYNTHESIZE and ok[0]["peer"].startswith("ipv")
    assert ok[0]["time_to_first_audio_ms"] > 0 and ok[0]["real_time_factor"] > 0
    failed = [r for r in records if r["method"] == SYNTHESIZE and r["status"] != "OK"]
    assert len(failed) == 1 and failed[0]["status"] == "INVALID_ARGUMENT"
    assert failed[0]["time_to_first_audio_ms"] is None and failed[0]["segments"] is None
    assert [r["status"] for r in records if r["method"].endswith("/ListVoices")] == ["OK"]


def test_log_format_is_checked():
    from barkstream.services.common.config import ServerConfig

    with pytest.raises(ValueError, match="log_format='xml': use plain or json"):
        ServerConfig(log_format="xml")
    assert ServerConfig.from_args(_server_args([]), {"BARKSTREAM_LOG_FORMAT": "json"}).log_format == "json"
    assert ServerConfig.from_args(_server_args(["--log-format", "json"]), {}).log_format == "json"


def _server_args(argv: list[str]):
    import argparse

    from barkstream.services.common.config import add_server_args

    parser = argparse.ArgumentParser()
    add_server_args(parser)
    return parser.parse_args(argv)


# -- requests that are not valid protobuf --------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _string_path(message, seen=()) -> list[FieldDescriptor] | None:
    """Fields leading from `message` to its first string field (through nested messages)."""
    for f in message.fields:
        if f.type == FieldDescriptor.TYPE_STRING:
            return [f]
    for f in message.fields:
        if f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.full_name not in seen:
            rest = _string_path(f.message_type, (*seen, message.full_name))
            if rest is not None:
                return [f, *rest]
    return None


def bad_message(message, payload: bytes) -> bytes:
    """Wire bytes of `message` whose first string field (maybe nested) holds `payload`."""
    data = payload
    for f in reversed(_string_path(message)):
        data = _varint(f.number << 3 | 2) + _varint(len(data)) + data
    return data


def every_rpc():
    for file in (tts_pb2.DESCRIPTOR, stages_pb2.DESCRIPTOR):
        for service in file.services_by_name.values():
            for method in service.methods:
                yield service, method


def implemented(app, service, method) -> bool:
    """Whether the servicer behind `service` overrides the generated UNIMPLEMENTED stub of `method`."""
    from barkstream.v1 import stages_pb2_grpc

    servicers = [s for s in app.servicers.values() if hasattr(s, method.name)]
    bases = {getattr(tts_pb2_grpc, f"{service.name}Servicer", None), getattr(stages_pb2_grpc,
                                                                             f"{service.name}Servicer", None)}
    stub = getattr(next(b for b in bases if b is not None), method.name)
    return any(isinstance(s, tuple(b for b in bases if b)) and getattr(type(s), method.name) is not stub
               for s in servicers)


@pytest.mark.parametrize("kind", list(BAD_STRINGS))
def test_every_rpc_answers_invalid_argument_without_a_traceback(server, caplog, capfd, kind):
    caplog.set_level(logging.DEBUG)
    # Every method a servicer implements (an RPC added to the protos is covered once it is implemented;
    # grpcio itself logs a traceback for a call to a generated UNIMPLEMENTED stub).
    rpcs = [(s, m) for s, m in every_rpc() if implemented(server.app, s, m)]
    assert {f"{s.name}/{m.name}" for s, m in rpcs} >= {"TextToSpeech/Synthesize", "TextToSpeech/ListVoices",
                                                       "SemanticService/Generate", "CoarseService/Generate",
                                                       "FineService/Generate", "CodecService/Decode"}
    with grpc.insecure_channel(server.target) as channel:
        for service, method in rpcs:
            data = bad_message(method.input_type, BAD_STRINGS[kind])
            path = f"/{service.full_name}/{method.name}"
            call = _raw_call(channel, path, method.client_streaming, method.server_streaming)
            err = rpc_error(lambda call=call, data=data: call(data))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, err.code(), err.details())
            assert err.details() == "request is not valid protobuf: a string field holds invalid UTF-8", path
        # grpc.health.v1 too: Check is a coroutine, Watch a stream written with context.write.
        for path, streaming in (("/grpc.health.v1.Health/Check", False), ("/grpc.health.v1.Health/Watch", True)):
            err = rpc_error(lambda p=path, s=streaming: _raw_call(channel, p, False, s)(b"\x0a\x02" +
                                                                                       BAD_STRINGS[kind]))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, err.code(), err.details())
        watch = HealthStub(channel).Watch(HealthCheckRequest(), timeout=10)
        assert next(watch).status == HealthCheckResponse.SERVING
        watch.cancel()
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert "Traceback" not in caplog.text and "bad UTF-8" not in caplog.text
    out, errors = capfd.readouterr()
    assert "Traceback" not in out + errors and "bad UTF-8" not in out + errors


def _raw_call(channel: grpc.Channel, path: str, client_streaming: bool, server_streaming: bool):
    """Bytes in, bytes out (identity serializers): the call as a function of one request message."""
    kinds = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
             (True, False): channel.stream_unary, (True, True): channel.stream_stream}
    rpc = kinds[(client_streaming, server_streaming)](path, request_serializer=None, response_deserializer=None)

    def call(data: bytes):
        request = iter([data]) if client_streaming else data
        result = rpc(request, timeout=30)
        return list(result) if server_streaming else result

    return call
