"""The Hydra launcher: plan a sweep, stage it, submit it to Slurm (or run it locally), collect results."""
