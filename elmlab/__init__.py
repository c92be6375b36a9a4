"""The `elmlab` command line: one entry point, one module per group of subcommands."""
