"""Hostile input through the HTTP gateway (hypothesis): generated `/v1/audio/speech` bodies (random JSON
of every type in every field, raw bytes, invalid UTF-8, lone surrogates) and WebSocket message
sequences (200; configs, text pieces, flush, clear, close, junk, in any order).

Every answer must be a 2xx or the right 4xx in OpenAI's error shape (a WebSocket: an allowed close code),
never a 500, a hang or a stream left running: the orchestrator is idle after each example.
"""

from __future__ import annotations

import http.client
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from barkstream.services.gateway.config import GatewayConfig

from .gateway_helpers import GatewayThread
from .service_helpers import idle, poll

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

HTTP_ALLOWED = {200, 400, 404, 413}
# 1000 a finished session, 1003 binary, 1007 not UTF-8, 1009 too big, 4400 a bad message, 4408 no config.
WS_ALLOWED = {1000, 1003, 1007, 1009, 4400, 4408}

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                         st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)
words = st.from_regex(r"[A-Za-z][A-Za-z ,.!?']{0,60}", fullmatch=True)
FIELD_VALUES = {
    "model": st.one_of(st.sampled_from(["tts-1", "bark", "tts-1-hd", "gpt-4o-mini-tts", "whisper-1", ""]), json_values),
    "input": st.one_of(words, st.text(max_size=80), st.just("word " * 1000), json_values),
    "voice": st.one_of(st.sampled_from(["alloy", "v2/en_speaker_0", "nobody", "../../etc/passwd", "",
                                        "v2/en_speaker_0\x00"]), st.fixed_dictionaries({"id": json_values}),
                       json_values),
    "response_format": st.one_of(st.sampled_from(["pcm", "wav", "ogg", "PCM", ""]), json_values),
    "speed": st.one_of(st.sampled_from([1.0, 1, 0.25, 4.0, 0]), json_values),
    "stream_format": st.one_of(st.sampled_from(["audio", "sse", "chunked"]), json_values),
    "instructions": st.one_of(st.sampled_from(["", "calm", "\ud800"]), json_values),
    "seed": st.one_of(st.integers(-5, 2**65), json_values),
    "greedy": json_values,
    "max_duration": st.one_of(st.sampled_from([0.2, 0, -1, 1e308]), json_values),
}


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["fields", "fields", "fields", "json", "bytes", "surrogate"]))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    body = {"model": "tts-1", "voice": "alloy", "input": "Hello there.", "max_duration": 0.2}
    for name in draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), max_size=4, unique=True)):
        body[name] = draw(FIELD_VALUES[name])
    if draw(st.booleans()):
        body[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
    data = json.dumps(body)
    if kind == "surrogate":
        data = data.replace("Hello", "\\udc80Hello")
    return data.encode()


@pytest.fixture(scope="module")
def gateway(embedded_server):
    gw = GatewayThread(embedded_server.target, GatewayConfig(
        http_host="127.0.0.1", voice_aliases="alloy=v2/en_speaker_0", max_body_bytes=4096,
        max_ws_message_bytes=4096, ws_first_message_timeout_s=2.0))
    yield gw
    gw.stop()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(body=bodies())
def test_speech_bodies(gateway, embedded_server, body):
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
    conn.request("POST", "/v1/audio/speech", body, {"content-type": "application/json"})
    r = conn.getresponse()
    status = r.status
    if status != 200:
        error = json.loads(r.read())["error"]
        assert error["message"] and error["type"]
    conn.close()  # a 200 is cut short here: the gateway must cancel its call
    assert status in HTTP_ALLOWED, (status, body)
    assert poll(lambda: idle(embedded_server.app), timeout=30), "a stream kept running"


control = st.sampled_from([{"type": "flush"}, {"type": "clear"}, {"type": "close"}])
ws_messages = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, st.one_of(words, st.text(max_size=20), st.just(""))),
    control,
    st.builds(lambda v: {"type": "config", "voice": v, "response_format": "pcm",
                         "params": {"semantic": {"max_gen_duration_s": 0.2}}},
              st.sampled_from(["v2/en_speaker_0", "alloy", "nobody"])),
    st.builds(lambda v: {"type": "text", "text": v}, json_values),
    st.builds(lambda v: {"type": v}, json_values),
    json_values)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(first=st.one_of(st.just({"type": "config", "voice": "alloy", "response_format": "pcm", "seed": 1,
                                "params": {"semantic": {"max_gen_duration_s": 0.2}}}), ws_messages),
       rest=st.lists(ws_messages, max_size=6), raw=st.one_of(st.none(), st.binary(max_size=8)))
def test_websocket_sequences(gateway, embedded_server, first, rest, raw):
    with connect(gateway.ws_url, open_timeout=10) as ws:
        try:
            for message in [first, *rest]:
                ws.send(json.dumps(message))
            if raw is not None:
                ws.send(raw)
            else:
                ws.send(json.dumps({"type": "close"}))
        except ConnectionClosed:
            pass  # the server closed first (a bad message): what it sent is still read below
        last = None
        try:
            while True:
                frame = ws.recv(timeout=60)
                last = frame if isinstance(frame, str) else last
        except ConnectionClosed:
            pass
        code = ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None
    assert code in WS_ALLOWED, (code, last, first, rest, raw)
    assert poll(lambda: idle(embedded_server.app), timeout=30), "a session kept running"
