"""``python -m degrade`` runs the CLI."""

from degrade.cli import run

run()
