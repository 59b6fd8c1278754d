"""A Hydra app that logs metrics as fast as it can (registry tests)."""

import os
import signal
import time

import hydra

import slurmml


@hydra.main(version_base="1.3", config_path=".", config_name="logger")
def main(cfg) -> float:
    for step in range(cfg.steps):
        slurmml.log(step=step, loss=1.0 / (step + 1), acc=step / cfg.steps, lr=cfg.lr, task=float(cfg.task))
        if cfg.kill_at_step is not None and step == cfg.kill_at_step:
            time.sleep(1.5)  # let a background flush or two happen, then die without any cleanup
            os.kill(os.getpid(), signal.SIGKILL)
    return float(cfg.task)


if __name__ == "__main__":
    main()
