# slurmml default template: no site setup.
# A template is a shell fragment run in the job before the task starts.
# `#SBATCH --option=value` lines are added to the job's options; every other
# line runs as written (module loads, venv activation, exports).
export PYTHONUNBUFFERED=1
