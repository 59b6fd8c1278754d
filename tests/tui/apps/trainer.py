"""A Hydra app for the TUI's cluster tests: logs a short training curve that depends on lr, says so on
stderr, then sleeps sleep_s seconds (a job long enough to cancel)."""

import sys
import time

import hydra

import slurmml


@hydra.main(version_base="1.3", config_path=".", config_name="trainer")
def main(cfg) -> float:
    val_acc = 0.0
    for step in range(cfg.steps):
        val_acc = 0.5 + 4 * cfg.lr * (step + 1) / cfg.steps
        slurmml.log(step=step, val_acc=val_acc, loss=1.0 / (1.0 + (step + 1) * cfg.lr * 10))
    print(f"trainer: lr={cfg.lr} finished {cfg.steps} steps, val_acc {val_acc:.4f}", file=sys.stderr, flush=True)
    time.sleep(cfg.sleep_s)
    return val_acc


if __name__ == "__main__":
    main()
