"""slurmml launcher plugin for Hydra (discovered through the hydra_plugins namespace)."""
