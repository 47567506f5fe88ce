"""The command line (`servectl`): `main` registers one module per command."""

from servectl.cli.main import app, main

__all__ = ["app", "main"]
