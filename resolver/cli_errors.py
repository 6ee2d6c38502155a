"""The error every `idnode` subcommand raises for a problem the user can fix.

Its own module so that `python -m resolver.cli` (where cli.py runs as __main__) and the subcommand modules
raise and catch the same class."""


class CliError(Exception):
    """A problem the user can fix; printed without a traceback, exit status 2."""
