"""A Hydra app that ends the way `case` says (poller state tests).

ok: returns; fail: raises; memory: holds mem_mb MB for sleep_s seconds; timeout and cancel: sleep sleep_s
seconds (the test's time limit or scancel ends them); requeue: sleeps sleep_s seconds in its first
execution and returns at once once Slurm has requeued it (SLURM_RESTART_COUNT > 0); flaky: raises the first
time it runs in its folder and returns the next time (a resubmission).
"""

import os
import time
from pathlib import Path

import hydra

import slurmml

SCORES = {"ok": 0.9, "fail": 0.1, "memory": 0.2, "timeout": 0.3, "cancel": 0.4, "requeue": 0.8, "flaky": 0.7}


@hydra.main(version_base="1.3", config_path=".", config_name="ends")
def main(cfg) -> float:
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    slurmml.log(step=restarts, score=SCORES[cfg.case])
    if cfg.case == "fail":
        raise RuntimeError("ends app failing on purpose")
    if cfg.case == "flaky" and not Path("ran-before").exists():  # the run's own folder (hydra.job.chdir)
        Path("ran-before").touch()
        raise RuntimeError("ends app failing the first time")
    if cfg.case == "memory":
        hog = bytearray(cfg.mem_mb * 1024 * 1024)
        for offset in range(0, len(hog), 4096):  # touch every page: resident, not just reserved
            hog[offset] = 1
        time.sleep(cfg.sleep_s)
    elif cfg.case in ("timeout", "cancel") or (cfg.case == "requeue" and restarts == 0):
        time.sleep(cfg.sleep_s)
    return SCORES[cfg.case]


if __name__ == "__main__":
    main()
