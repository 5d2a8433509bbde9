"""The command-line help is written for Qlik admins: values shown as they are typed, no Python types."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from promoter.cli import app

PYTHON_TYPE = re.compile(
    r"<(bool|str|int|float|uuid|path|file|dir|list\[|int range|float range)", re.IGNORECASE
)


def command_paths() -> list[list[str]]:
    """Every command and subcommand, as the words typed after qs-promoter."""
    found: list[list[str]] = [[]]

    def walk(command: object, path: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            found.append([*path, name])
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


PATHS = command_paths()


@pytest.mark.parametrize("words", PATHS, ids=[" ".join(p) or "qs-promoter" for p in PATHS])
def test_help_shows_no_python_types(words: list[str]) -> None:
    """No `<bool>`, `<str>`, `<list[str]>` or `<UUID>` after an option or argument: a flag shows
    nothing, a value its placeholder (FILE, FOLDER, SITE, NUMBER)."""
    result = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert "list[" not in result.output
    assert PYTHON_TYPE.search(result.output) is None, result.output


def test_repeatable_options_are_shown_repeated() -> None:
    """promote and plan show --site and --stream with one value each and say how to give several."""
    for command in ("promote", "plan"):
        output = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
        flat = " ".join(output.split())

        assert re.search(r"--site\s+SITE\s", output), output
        assert "--site test --site prod" in flat
        assert "--stream Sales --stream Finance" in flat
        assert re.search(r"\*\s+APP_ID\s+The app's id", output), output


def test_the_top_level_help_says_what_the_tool_does_without_internal_words() -> None:
    """The first screen speaks of Qlik apps and sites, not of typer apps or sub-modules."""
    output = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output

    assert "promote Qlik Sense apps" in output
    assert "typer" not in output and "sub-module" not in output
    assert "promote-app/" not in output and "rollback-app" not in output
