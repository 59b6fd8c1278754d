"""A tiny Hydra app for launcher tests: fast to start, records what the job saw."""

import json
import os
import time

import hydra


@hydra.main(version_base="1.3", config_path=".", config_name="tiny")
def main(cfg) -> int:
    seen = {k: v for k, v in os.environ.items() if k.startswith("SLURM_")}
    with open("env.json", "w") as handle:
        json.dump(seen, handle)
    time.sleep(cfg.sleep_s)
    if cfg.fail:
        raise ValueError(f"tiny app failing on purpose (x={cfg.x})")
    return cfg.x * 2


if __name__ == "__main__":
    main()
