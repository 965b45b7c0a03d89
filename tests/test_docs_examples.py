"""Every code example in README.md and docs/ runs as written against the offline quick-start server.

The server is the embedded one on the tiny random checkpoint (what `make serve ARGS="--random-checkpoint
tiny"` runs), which has every Suno v2 voice name. The documented address `localhost:50051` is pointed
at it; nothing else in an example is changed. Each example runs in its own process with a timeout, so a
failed stream must end it with an error: an example that waits forever fails here. How examples are
found and what a fence may say it needs: tests/docs_examples.py.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from barkstream.client import commands
from barkstream.services.cli.main import build_parser as server_parser

from .docs_examples import Example, all_examples, barkstream_argv, barkstream_commands

DOCUMENTED_TARGET = "localhost:50051"
EXAMPLE_TIMEOUT_S = 240
FAKE_SOUND_CARD = Path(__file__).parent / "fake_sound_card"
EXAMPLES = all_examples()

pytestmark = [pytest.mark.slow, pytest.mark.timeout(EXAMPLE_TIMEOUT_S * 2)]


def _env(target: str, tmp_path: Path, example: Example) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BARKSTREAM_")}
    env["BARKSTREAM_TARGET"] = target
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    (shim / "barkstream").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m barkstream.client.cli "$@"\n')
    (shim / "barkstream").chmod(0o755)
    env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
    if example.needs == "sound-card":
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(FAKE_SOUND_CARD), env.get("PYTHONPATH")) if p)
        env["BARKSTREAM_FAKE_SOUND_CARD_LOG"] = str(tmp_path / "sound-card.log")
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path, what: str) -> None:
    try:
        done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=EXAMPLE_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what}: still running after {EXAMPLE_TIMEOUT_S} s (an example must end, even when it fails)")
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"


def _check_imports(example: Example) -> None:
    """A compiled-only example still names only what exists: its barkstream imports must resolve."""
    tree = ast.parse(example.code, filename=example.id)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("barkstream"):
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            assert not missing, f"{example.id}: {node.module} has no {missing}"


def _parse(argv: list[str], where: str) -> None:
    """A barkstream command that is not run is still checked against the real argument parser."""
    parser = server_parser() if argv and argv[0] in commands.SERVER_COMMANDS else commands.build_parser({})
    try:
        parser.parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{where}: `barkstream {' '.join(argv)}` does not parse (exit {e.code})")


def test_the_docs_have_examples_of_both_kinds():
    languages = {e.language for e in EXAMPLES}
    assert languages == {"python", "shell"} and len(EXAMPLES) >= 8


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_example_runs_as_written(example: Example, server, tmp_path):
    if example.language == "python":
        compile(example.code, example.id, "exec")
        _check_imports(example)
        if not example.runs():
            return
        script = tmp_path / "example.py"
        script.write_text(example.code.replace(DOCUMENTED_TARGET, server.target), encoding="utf-8")
        _run([sys.executable, str(script)], _env(server.target, tmp_path, example), tmp_path, example.id)
    else:
        env = _env(server.target, tmp_path, example)
        for command in barkstream_commands(example.code):
            argv = barkstream_argv(command)
            assert argv is not None
            if argv[0] == "serve" or not example.runs():
                _parse(argv, example.id)
                continue
            _run(["bash", "-c", command.replace(DOCUMENTED_TARGET, server.target)], env, tmp_path,
                 f"{example.id}: {command}")
    if example.needs == "sound-card" and example.runs():
        played = (tmp_path / "sound-card.log").read_text().split()
        assert played and int(played[1]) > 0, f"{example.id}: nothing reached the sound card"


def test_examples_are_found_in_every_markdown_file_under_docs(tmp_path, monkeypatch):
    """A page added later (sessions, formats, gateway) is picked up without touching a list."""
    from . import docs_examples

    (tmp_path / "docs" / "later").mkdir(parents=True)
    (tmp_path / "README.md").write_text("# Readme\n\n```bash\nmake serve\n```\n")
    (tmp_path / "docs" / "later" / "new.md").write_text(
        "# New\n\n```python\nprint('hi')\n```\n\n```bash needs=docker\nbarkstream say hi -o a.wav\n```\n")
    monkeypatch.setattr(docs_examples, "ROOT", tmp_path)
    found = docs_examples.all_examples()
    assert [(e.id, e.language, e.needs) for e in found] == [
        ("docs/later/new.md:3", "python", None), ("docs/later/new.md:7", "shell", "docker")]
    (tmp_path / "docs" / "bad.md").write_text("```python needs=a-sound-card\nprint('hi')\n```\n")
    with pytest.raises(ValueError, match="needs="):
        docs_examples.all_examples()
