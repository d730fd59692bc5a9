"""`python -m scheda` is the `scheda` command."""

from scheda.cli import main

main()
