"""Every `medassist ...` command the README shows parses with the real command line, so a documented command
cannot drift from the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from medassist.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    """The `medassist` commands of the README's code blocks (continuation lines joined, comments dropped)."""
    commands, block, inside = [], [], False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        block.append(line)
    text = "\n".join(block).replace("\\\n", " ")
    for line in text.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        match = re.match(r"^(?:\S*/)?medassist\s+(.*)$", line) or re.search(r"\s-m\s+medassist\s+(.*)$", line)
        if match and not line.startswith("#"):
            commands.append(match.group(1))
    return commands


COMMANDS = readme_commands()


def test_the_readme_shows_commands() -> None:
    assert len(COMMANDS) > 40


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_parses(command: str) -> None:
    argv = shlex.split(command)
    try:
        build_parser(argv).parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0:  # --help
            return
        pytest.fail(f"`medassist {command}` does not parse (exit {exc.code})")
