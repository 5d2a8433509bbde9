"""``python -m promoter.cli``: the qs-promoter command, for child processes and hosts without the script."""

from promoter.cli import app

app(prog_name="qs-promoter")
