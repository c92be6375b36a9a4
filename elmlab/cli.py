"""`elmlab`: the command line.

Each module in `elmlab.commands` adds its subcommands through `register(subparsers)`; a subcommand
sets `func(args) -> int`. Errors the user can fix (`UsageError`, `ValueError` from validation,
missing files) print one line and the usage, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Each command module and the subcommands its `register` adds (tests/elmlab/test_cli_parser.py checks
# them): `elmlab COMMAND ...` builds only the parser of COMMAND's module.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "model": ("allocate",),
    "train": ("train",),
    "bench": ("bench",),
    "store": ("store", "export", "import-reference"),
    "fit": ("fit",),
    "queue": ("submit", "sweep", "status", "cancel", "retry", "worker", "recorder"),
    "search": ("controller",),
    "up": ("up",),
    "demo": ("demo",),
    "gpu": ("gpu-check",),
}


class UsageError(Exception):
    """A mistake in the command line or its inputs, reported in one line."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; given a `command` that COMMAND_MODULES lists, the parser of the
    commands of its module only (the others' modules are not even imported)."""
    parser = argparse.ArgumentParser(
        prog="elmlab",
        description="ELM Lab: explore how a parameter budget should be split between more neurons "
        "and more complex neurons in networks of Expressive Leaky Memory neurons.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [name for name, commands in COMMAND_MODULES.items() if command in commands] or list(COMMAND_MODULES)
    for name in modules:
        try:
            module = importlib.import_module(f"elmlab.commands.{name}")
        except ModuleNotFoundError as exc:  # a command group not present in this install
            if exc.name == f"elmlab.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (UsageError, ValueError, FileNotFoundError) as exc:
        print(f"elmlab {args.command}: error: {exc}", file=sys.stderr)
        sub_parser = getattr(args, "_parser", None)
        if sub_parser is not None:
            sub_parser.print_usage(sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a file where a folder should be, no permission
        print(f"elmlab {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # `python -m elmlab.cli`: use the importable module, so UsageError is one class
    from elmlab.cli import main as _main

    sys.exit(_main())
