# Example site template: copy it, adapt it, and point `hydra.launcher.template` at your copy.
#SBATCH --open-mode=append
#SBATCH --requeue
export PYTHONUNBUFFERED=1
# Load the site's toolchain; `module` exists only where the site provides it.
if command -v module >/dev/null 2>&1; then module load cuda; fi
# Activate the project's environment on the shared filesystem, when set.
if [ -n "${SLURMML_VENV:-}" ]; then source "$SLURMML_VENV/bin/activate"; fi
# Keep caches off the home filesystem.
export TORCH_HOME="${SCRATCH:-$HOME}/.cache/torch"
