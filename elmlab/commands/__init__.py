"""Subcommand modules. Each defines `register(subparsers)`; `elmlab.cli` lists them, and the commands each
adds, in COMMAND_MODULES."""
