"""The command line's parser: COMMAND_MODULES lists what each module adds, and `elmlab COMMAND` builds
the parser of that command's module alone."""

from __future__ import annotations

import argparse
import importlib

import pytest

from elmlab.cli import COMMAND_MODULES, build_parser, main


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


@pytest.mark.parametrize("name", list(COMMAND_MODULES))
def test_each_module_adds_the_commands_listed_for_it(name: str):
    parser = argparse.ArgumentParser()
    importlib.import_module(f"elmlab.commands.{name}").register(parser.add_subparsers())
    assert tuple(_commands(parser)) == COMMAND_MODULES[name]


def test_a_known_command_builds_its_module_only_anything_else_every_command():
    every = [c for commands in COMMAND_MODULES.values() for c in commands]
    assert _commands(build_parser()) == every
    assert _commands(build_parser("nosuch")) == _commands(build_parser("--help")) == every
    assert _commands(build_parser("status")) == list(COMMAND_MODULES["queue"])
    assert _commands(build_parser("export")) == list(COMMAND_MODULES["store"])


def test_help_and_errors_still_name_every_command(capsys: pytest.CaptureFixture[str]):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("allocate", "status", "gpu-check", "import-reference"))
    with pytest.raises(SystemExit) as exit_:
        main(["nosuch"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "invalid choice: 'nosuch'" in err and "gpu-check" in err
