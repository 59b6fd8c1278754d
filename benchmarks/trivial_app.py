"""A trivial Hydra task for benchmarks/bench_submit.py: returns a number, does nothing else."""

import hydra


@hydra.main(version_base="1.3", config_path=".", config_name="trivial_app")
def main(cfg) -> int:
    return cfg.x * 2


if __name__ == "__main__":
    main()
