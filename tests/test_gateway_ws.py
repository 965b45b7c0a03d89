"""`/v1/audio/ws` driven by the `websockets` package (a client nobody here wrote): bad messages, tokens
and limits end with an error event and the right close code; sessions run text, flush, clear, close."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from barkstream.services.gateway.config import GatewayConfig

from .gateway_helpers import GatewayThread

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CONFIG = {"type": "config", "voice": "v2/en_speaker_0", "response_format": "pcm", "seed": 1, "greedy": True,
          "params": {"semantic": {"max_gen_duration_s": 0.5}}}


@pytest.fixture(scope="module")
def gateway(embedded_server):
    gw = GatewayThread(embedded_server.target, GatewayConfig(http_host="127.0.0.1", max_ws_message_bytes=8192,
                                                             ws_first_message_timeout_s=1.0),
                       auth_token="ws-token")
    yield gw
    gw.stop()


def session(gw: GatewayThread, token: str | None = "ws-token", subprotocol: bool = False):
    if subprotocol:
        return connect(gw.ws_url, subprotocols=["barkstream", f"bearer.{token}"], open_timeout=10)
    headers = {"authorization": f"Bearer {token}"} if token else None
    return connect(gw.ws_url, additional_headers=headers, open_timeout=10)


def closed_with(ws, *send) -> tuple[int, list[dict]]:
    """Send `send`, then read until the server closes: (close code, JSON events received)."""
    events: list[dict] = []
    try:
        for message in send:
            if isinstance(message, tuple):
                ws.send(*message[:1], text=message[1])
            else:
                ws.send(message)
    except ConnectionClosed:
        pass  # the server may close first (a refused token); what it sent before is still read below
    try:
        while True:
            frame = ws.recv(timeout=30)
            if isinstance(frame, str):
                events.append(json.loads(frame))
    except ConnectionClosed:
        pass
    return ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else ws.protocol.close_code, events


@pytest.mark.parametrize("messages, code, error", [
    (["{not json"], 4400, "invalid_json"),
    (["[1]"], 4400, "invalid_json"),
    ([json.dumps({"type": "text", "text": "config first"})], 4400, "invalid_value"),
    ([json.dumps({"no": "type"})], 4400, "invalid_value"),
    ([json.dumps({**CONFIG, "seed": "one"})], 4400, "invalid_value"),
    ([json.dumps({**CONFIG, "voice": 3})], 4400, "invalid_type"),
    ([json.dumps({**CONFIG, "response_format": "ogg"})], 4400, "invalid_value"),
    ([json.dumps({**CONFIG, "voice": "\ud800"})], 4400, "invalid_utf8"),
    ([json.dumps({**CONFIG, "unknown_field": 1})], 4400, "invalid_value"),
    ([(b"\x00\x01", False)], 1003, "binary_frame"),
])
def test_bad_messages_close_with_4400(gateway, server, messages, code, error):
    with session(gateway) as ws:
        got, events = closed_with(ws, *messages)
    assert got == code
    assert events[-1]["type"] == "error" and events[-1]["code"] == error and events[-1]["message"]


def test_invalid_utf8_text_frame_is_1007(gateway, server):
    with session(gateway) as ws:
        got, _ = closed_with(ws, (b'{"type": "text", "text": "\xff"}', True))
    assert got == 1007


def test_message_over_the_limit_is_1009(gateway, server):
    with session(gateway) as ws:
        got, _ = closed_with(ws, json.dumps({"type": "config", "voice": "x" * 10000}))
    assert got == 1009


def test_no_configuration_in_time(gateway, server):
    with session(gateway) as ws:
        got, events = closed_with(ws)
    assert got == 4408 and events[-1]["status"] == 408


@pytest.mark.parametrize("token", [None, "wrong"])
def test_tokens(gateway, server, token):
    with session(gateway, token) as ws:
        got, events = closed_with(ws, json.dumps(CONFIG))
    assert got == 4401 and events[-1]["code"] == "invalid_api_key"


def test_browser_token_subprotocol(gateway, server):
    with session(gateway, "wrong", subprotocol=True) as ws:
        assert ws.subprotocol == "barkstream"
        got, _ = closed_with(ws, json.dumps(CONFIG))
    assert got == 4401


def run_session(ws, pieces, *, wait_audio_then=None) -> tuple[list[dict], bytes, int]:
    """Send `pieces` (dicts), read everything until the server closes: (events, audio bytes, close code).
    wait_audio_then: messages to send once the first audio frame has arrived (e.g. a clear, more text)."""
    for piece in pieces:
        ws.send(json.dumps(piece))
    events: list[dict] = []
    audio = bytearray()
    try:
        while True:
            frame = ws.recv(timeout=120)
            if isinstance(frame, bytes):
                audio += frame
                if wait_audio_then:
                    for piece in wait_audio_then:
                        ws.send(json.dumps(piece))
                    wait_audio_then = None
            else:
                events.append(json.loads(frame))
    except ConnectionClosed:
        pass
    return events, bytes(audio), ws.protocol.close_rcvd.code


def test_session_streams_text_in_and_audio_out(gateway, server):
    words = "Hello world, my dog likes pizza and music. The cat sighs.".split(" ")
    pieces = [{"type": "text", "text": w + " "} for w in words[:7]] + [{"type": "flush"}]
    pieces += [{"type": "text", "text": w + " "} for w in words[7:]] + [{"type": "close"}]
    with session(gateway) as ws:
        events, audio, code = run_session(ws, [CONFIG, *pieces])
    assert code == 1000, events[-1]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "header" and kinds[-1] == "summary"
    header, summary = events[0], events[-1]
    assert header["encoding"] == "AUDIO_ENCODING_PCM_S16LE" and header["sample_rate_hz"] == 24000
    started = [e for e in events if e["type"] == "segment_started"]
    done = [e for e in events if e["type"] == "segment_done"]
    assert len(started) == len(done) >= 2  # the flush cut the text in two at least
    assert " ".join(e["text"].strip() for e in started).split() == " ".join(words).split()
    assert len(audio) == 2 * int(summary["total_samples"]) and len(audio) > 0
    assert int(done[-1]["end_sample"]) == int(summary["total_samples"])


def test_session_clear_stops_audio_and_goes_on(gateway, server):
    long = {**CONFIG, "params": {"semantic": {"max_gen_duration_s": 8.0}}}
    text = "Hello world, my dog likes pizza and music. The cat sighs and laughs at the voice of the text today."
    with session(gateway) as ws:
        events, audio, code = run_session(
            ws, [long, {"type": "text", "text": text}, {"type": "flush"}],
            wait_audio_then=[{"type": "clear"}, {"type": "text", "text": "Bye now."}, {"type": "close"}])
    assert code == 1000, events[-1]
    cleared = [e for e in events if e["type"] == "cleared"]
    assert len(cleared) == 1 and cleared[0]["segment_indices"]
    assert any(e["type"] == "segment_done" and e.get("interrupted") for e in events)
    after = events[events.index(cleared[0]):]
    assert any(e["type"] == "segment_started" and "Bye" in e["text"] for e in after)
    assert events[-1]["type"] == "summary"
    assert len(audio) < 2 * 24000 * 16  # far less than the two long segments would have made


def test_session_client_that_never_reads_is_given_up(embedded_server, server):
    """A WebSocket client that stops reading: after write_timeout_s without progress the session ends and
    its StreamingSynthesize call is cancelled (every stage frees its rows), without a hang."""
    import socket

    from .service_helpers import idle, poll

    gw = GatewayThread(embedded_server.target, GatewayConfig(http_host="127.0.0.1", write_timeout_s=1.0))
    try:
        gw.server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # inherited by accepted sockets
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gw.port))
        long = {**CONFIG, "params": {"semantic": {"max_gen_duration_s": 6.0}}}
        with connect(gw.ws_url, sock=sock, max_queue=1, open_timeout=10) as ws:
            ws.send(json.dumps(long))
            ws.send(json.dumps({"type": "text", "text": "Hello world, my dog likes pizza and music. " * 3}))
            ws.send(json.dumps({"type": "close"}))
            assert poll(lambda: not idle(server.app), timeout=30)  # it started
            assert poll(lambda: idle(server.app), timeout=90), "the session of a stuck client kept running"
    finally:
        gw.stop()
