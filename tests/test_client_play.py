"""`barkstream say --play` (client/play.py): the missing-extra message, and a real stream played on a fake device.

No test machine has a sound card, so the device here is a fake PortAudio (tests/fake_sound_card):
a thread that pulls `blocksize` frames through the player's callback every block period, as PortAudio does.
"""

from __future__ import annotations

import io
import sys
import time

import pytest

from barkstream.client import TTSClient, commands
from barkstream.client.play import PLAY_INSTALL, PlaybackBuffer, Player

from .fake_sound_card.sounddevice import RawOutputStream as FakeDevice
from .service_helpers import THREE_SEGMENTS, VOICE

pytestmark = pytest.mark.timeout(180)


def test_play_without_the_extra_says_how_to_install_before_any_synthesis(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # the [play] extra is not installed
    err = io.StringIO()
    code = commands.main(["say", "Hello there.", "--play", "--target", "localhost:1"], environ={},
                         stdin=io.StringIO(), stdout=io.StringIO(), stderr=err)
    assert code == commands.EXIT_ERROR
    line = err.getvalue().strip()
    assert line == f"barkstream say: error: {PLAY_INSTALL}"
    assert "barkstream[play]" in line and "libportaudio2" in line and "localhost:1" not in line


def test_buffer_plays_every_byte_in_order_and_fills_underruns_with_silence():
    buf = PlaybackBuffer(frame_bytes=2)
    out = bytearray(6)
    assert buf.fill(out) and out == bytes(6) and buf.underruns == 1  # nothing yet: silence, keep going
    buf.push(b"abcd")
    buf.push(b"efgh")
    assert buf.fill(out) and out == b"abcdef"
    buf.close()
    assert not buf.drained.is_set()
    assert not buf.fill(out) and out == b"gh" + bytes(4), "the tail, then silence; False: all played"
    assert buf.drained.is_set() and buf.underruns == 1
    assert buf.silences == [(0, 6), (14, 4)]


def test_player_plays_the_stream_while_it_arrives(server):
    devices: list[FakeDevice] = []

    def open_fake(**kwargs) -> FakeDevice:
        device = FakeDevice(**kwargs)
        device.start()
        devices.append(device)
        return device

    player = Player(open_stream=open_fake)
    received = bytearray()
    with TTSClient(server.target) as client, client.stream(THREE_SEGMENTS, voice=VOICE, seed=1234, greedy=True,
                                                           max_duration=0.5) as stream:
        player.start(stream.wait_header())
        for chunk in stream:
            player.write(chunk.data)
            received += chunk.data
        last_chunk_at = time.monotonic()
        player.finish()
    (device,) = devices
    assert device.closed and not device.running.is_set()
    assert (device.samplerate, device.width) == (24000, 2)
    assert len(received) > 0
    audio, at = bytearray(), 0
    for start, n in player.buffer.silences:  # what the device played, less the silence put in while waiting
        audio += device.played[at:start]
        at = start + n
    audio += device.played[at:]
    assert bytes(audio) == bytes(received), "every byte, in order"
    first_sound = next(t for t, block in device.pulls if any(block))
    assert first_sound < last_chunk_at, "the device played before the stream had ended"
