""""Did you mean ...?" for a mistyped command or flag (argparse only has it from Python 3.14).

Shared by the client's parser and the server commands' parser (services/cli/main.py), so a
typo gets the same help on either side of the `barkstream` command.
"""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Iterator
from typing import NoReturn

_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")


def _option_strings(parser: argparse.ArgumentParser) -> Iterator[str]:
    """Every flag of `parser` and of its subcommands (the top parser reports their unknown flags)."""
    for action in parser._actions:
        yield from action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _option_strings(sub)


def did_you_mean(message: str, parser: argparse.ArgumentParser) -> str:
    """The closest command or flag to the one argparse rejected in `message`, as a hint; "" when none is close."""
    choice = _INVALID_CHOICE.search(message)
    if choice:
        wrong, candidates = choice.group(1), re.findall(r"'([^']*)'", choice.group(2))
    else:
        unknown = _UNRECOGNIZED.search(message)
        flags = [t.split("=", 1)[0] for t in unknown.group(1).split() if t.startswith("-")] if unknown else []
        if not flags:
            return ""
        wrong, candidates = flags[0], sorted(set(_option_strings(parser)))
    close = difflib.get_close_matches(wrong, candidates, n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else ""


class SuggestingParser(argparse.ArgumentParser):
    """argparse with a "did you mean" hint, and an error that is one line, not the usage block."""

    exit_status = 2

    def error(self, message: str) -> NoReturn:
        hint = did_you_mean(message, self)
        hint = f"; {hint}" if hint else ""
        self.exit(self.exit_status, f"{self.prog}: error: {message}{hint} (see {self.prog} --help)\n")
