"""`python -m slurmml` is the `slurmml` command."""

from slurmml.cli import main

main()
