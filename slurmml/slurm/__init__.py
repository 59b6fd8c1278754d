"""Slurm: pure builders and parsers, plus one thin adapter that runs commands."""
