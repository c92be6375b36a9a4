"""Subcommand modules. Each defines `register(subparsers)`; `elmlab.cli` lists them in COMMAND_MODULES."""
