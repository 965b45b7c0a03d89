"""`barkstream say` / `barkstream voices` as a user runs them: a subprocess against the embedded server.

Checks: a valid WAV file; `-o -` streams raw PCM while the synthesis is still running (the first
bytes reach the pipe before the process ends and while the server still holds the stream);
text from a file and from stdin; one-line errors with a non-zero exit. (Argument mistakes that
never reach a server are covered in-process by test_client_unit.py.)
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import wave

import numpy as np
import pytest

from .service_helpers import ONE_SEGMENT, THREE_SEGMENTS, VOICE

pytestmark = pytest.mark.timeout(180)

FAST = ["--greedy", "--max-duration", "0.5", "--seed", "1234", "--segment-schedule", "fixed"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "barkstream.client.cli", *args]


def run(*args: str, target: str | None = None, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BARKSTREAM_")}
    if target:
        env["BARKSTREAM_TARGET"] = target
    return subprocess.run(cli(*args), input=stdin, capture_output=True, text=stdin is not None, env=env, cwd=cwd,
                          timeout=120, stdin=None if stdin is not None else subprocess.DEVNULL)


def test_say_writes_a_valid_wav(server, tmp_path):
    out = tmp_path / "hello.wav"
    done = run("say", THREE_SEGMENTS, "--voice", VOICE, *FAST, "-o", str(out), target=server.target)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b"" and done.stdout == b""  # no terminal: quiet
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000)
        frames = w.getnframes()
        assert frames > 0 and len(w.readframes(frames)) == 2 * frames
    assert out.stat().st_size == 44 + 2 * frames  # header sizes patched to the real length
    assert list(tmp_path.iterdir()) == [out]  # no .part left behind


def test_say_sample_rate_float_and_progress(server, tmp_path):
    out = tmp_path / "x.f32"
    done = run("say", ONE_SEGMENT, *FAST, "--sample-rate", "16000", "--target", server.target, "--progress",
               "-o", str(out))
    assert done.returncode == 0, done.stderr
    samples = np.frombuffer(out.read_bytes(), "<f4")
    assert len(samples) > 0 and np.isfinite(samples).all()
    last = done.stderr.decode().replace("\r", "\n").strip().splitlines()[-1]
    assert "segments 1/1" in last and "first audio" in last and "RTF" in last and str(out) in last


def test_say_dash_streams_raw_pcm_while_generating(server):
    """Six segments: the first bytes must be on the pipe before the process exits and while the
    server is still working on the stream."""
    app = server.app
    text = f"{THREE_SEGMENTS} {THREE_SEGMENTS}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BARKSTREAM_")}
    proc = subprocess.Popen(cli("say", text, "--greedy", "--max-duration", "1.0", "--target", server.target,
                                "-o", "-"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env)
    fd = proc.stdout.fileno()
    data = bytearray()
    try:
        deadline = time.monotonic() + 120
        while not data and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                data += chunk
        assert data, proc.stderr.read().decode()
        still_running = proc.poll() is None
        server_busy = sum(a.active for a in app.handle.admissions if a.name == "orchestrator")
        assert still_running, "the first audio only arrived when the command had finished"
        assert server_busy == 1, "the first audio only arrived after the server had finished"
        while chunk := os.read(fd, 1 << 16):
            data += chunk
        assert proc.wait(60) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(data) % 2 == 0 and len(data) > 24000 * 2  # more than a second of 16-bit PCM
    assert proc.stderr.read() == b""


def test_text_from_a_file_and_from_stdin(server, tmp_path):
    (tmp_path / "in.txt").write_text(ONE_SEGMENT, encoding="utf-8")
    done = run("say", "--text-file", "in.txt", *FAST, "-o", "a.pcm", target=server.target, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = run("say", *FAST, "-o", "b.pcm", target=server.target, cwd=tmp_path, stdin=ONE_SEGMENT)
    assert done.returncode == 0, done.stderr
    # Same text, same seed, greedy: the same audio whichever way the text came in.
    assert (tmp_path / "a.pcm").read_bytes() == (tmp_path / "b.pcm").read_bytes() != b""


def test_voices(server):
    done = run("voices", "--target", server.target, stdin="")
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert [VOICE, "en"] in rows
    done = run("voices", "--language", "de", target=server.target, stdin="")
    assert done.returncode == 0 and all(r.split("\t")[1] == "de" for r in done.stdout.splitlines())


def one_line_error(done: subprocess.CompletedProcess) -> str:
    err = done.stderr if isinstance(done.stderr, str) else done.stderr.decode()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("barkstream say: error:"), err
    return lines[0]


def test_server_side_refusals_are_one_line(server, tmp_path):
    done = run("say", ONE_SEGMENT, "--voice", "v9/nobody", "-o", "x.wav", target=server.target, cwd=tmp_path)
    assert done.returncode == 2 and "unknown voice" in one_line_error(done)
    done = run("say", ONE_SEGMENT, "--sample-rate", "12345", "-o", "x.wav", target=server.target, cwd=tmp_path)
    assert done.returncode == 2 and "sample_rate_hz" in one_line_error(done)
    assert list(tmp_path.iterdir()) == []  # nothing written for a refused request


def test_bad_arguments_and_unreachable_servers_are_one_line(tmp_path):
    done = run("say", "hi", "--seed", "many", "-o", "x.wav", cwd=tmp_path)
    assert done.returncode == 2 and "--seed" in one_line_error(done)
    done = run("say", "hi", "--target", "127.0.0.1:1", "-o", "x.wav", cwd=tmp_path)
    assert done.returncode == 75 and "127.0.0.1:1" in one_line_error(done)
    done = run("say", "hi", "--target", "127.0.0.1:1", "--wait", "--timeout", "0.5", "-o", "x.wav", cwd=tmp_path)
    assert done.returncode == 1 and "DEADLINE_EXCEEDED" in one_line_error(done)
