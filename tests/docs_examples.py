"""The code examples of README.md and docs/**/*.md, found by reading the Markdown (test_docs_examples.py runs them).

A fenced block is an example when its language is python (run as a script) or bash/sh/shell
(each `barkstream ...` command in it runs; `barkstream serve ...` lines are parsed with the real
argument parser, since a server does not end). Other lines of a shell block (make, docker,
kubectl, export) are not run: they need a machine of their own.

What an example needs beyond the install goes in the fence's info string, e.g.

    ```python needs=sound-card
    ```bash needs=kubernetes

`sound-card` examples run with a fake sound card (tests/fake_sound_card). The others in `NEEDS`
are compiled (Python) or parsed (barkstream commands) but not run. Anything else after the
language is an error, so a typo cannot quietly turn an example off.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What an example may need that the test machine lacks, and what the tests do with it instead.
NEEDS = {
    "sound-card": "run with a fake sound card",
    "audio-player": "parsed only: needs a command-line player (aplay, ffplay) and a sound card",
    "tls-server": "compiled only: needs a server with TLS certificates",
    "kubernetes": "parsed only: needs a cluster",
    "docker": "parsed only: needs a container engine",
}
PYTHON = {"python", "py"}
SHELL = {"bash", "sh", "shell"}
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")


@dataclass(frozen=True)
class Example:
    path: Path
    line: int
    language: str  # "python" or "shell"
    code: str
    needs: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def runs(self) -> bool:
        return self.needs in (None, "sound-card")


def doc_files() -> list[Path]:
    """README.md and every Markdown file under docs/, so a new page's examples are tested without a list."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def parse_info(info: str, where: str) -> tuple[str, str | None]:
    """A fence's info string -> (language, needs); ValueError for anything it does not understand."""
    words = info.split()
    language = words[0].lower() if words else ""
    needs = None
    for word in words[1:]:
        key, _, value = word.partition("=")
        if key != "needs" or value not in NEEDS:
            raise ValueError(f"{where}: fence info {info!r}: only needs=<{'|'.join(NEEDS)}> may follow the language")
        needs = value
    return language, needs


def examples(path: Path) -> list[Example]:
    text = path.read_text(encoding="utf-8")
    found = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        language, needs = parse_info(m.group(1), f"{path.relative_to(ROOT)}:{line}")
        if language in PYTHON:
            found.append(Example(path, line, "python", m.group(2), needs))
        elif language in SHELL and barkstream_commands(m.group(2)):
            found.append(Example(path, line, "shell", m.group(2), needs))
    return found


def all_examples() -> list[Example]:
    return [e for path in doc_files() for e in examples(path)]


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    commands, pending = [], ""
    for raw in code.splitlines():
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def barkstream_argv(command: str) -> list[str] | None:
    """`[ENV=...] barkstream ARGS [# comment]` -> ARGS (up to a pipe or `&`); None for other programs."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars="|&;<>")
    lexer.whitespace_split = True
    tokens = list(lexer)
    while tokens and _ENV_ASSIGNMENT.match(tokens[0]):
        tokens.pop(0)
    if not tokens or tokens[0] != "barkstream":
        return None
    argv = []
    for token in tokens[1:]:
        if token in ("|", "&", "&&", ";", ">", "<") or token == "...":
            break
        argv.append(token)
    return argv


def barkstream_commands(code: str) -> list[str]:
    return [c for c in shell_commands(code) if barkstream_argv(c) is not None]
