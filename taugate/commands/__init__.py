"""One module per ``taugate`` subcommand (see taugate/cli.py)."""
