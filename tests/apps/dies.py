"""A Hydra app whose two tasks train in step (gloo) and save with every rank (all_ranks=True); rank 1's state
cannot be saved once Slurm's warning came: its process ends midway through the save (die_in_save=true)."""

import os
import time

import hydra

import slurmml


class RankState:
    def __init__(self, rank: int, die: bool) -> None:
        self.rank, self.die, self.value = rank, die, 0

    def state_dict(self):
        if self.die and self.rank == 1:
            os._exit(3)  # as a rank killed while it writes its part of the checkpoint
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


@hydra.main(version_base="1.3", config_path=".", config_name="dies")
def main(cfg) -> float:
    rank, _ = slurmml.init_distributed()
    state = RankState(rank, cfg.die_in_save and int(os.environ.get("SLURM_RESTART_COUNT", "0")) == 0)
    folder = slurmml.run.dir / f"rank{rank}"
    resumed = slurmml.load_checkpoint(folder=slurmml.run.dir / "rank0", state=state)  # every rank: rank 0's state
    for step in range(resumed.step + 1 if resumed else 0, cfg.steps):
        time.sleep(cfg.sleep_s)
        state.value += 1
        slurmml.log(step=step, value=float(state.value))
        slurmml.checkpoint_point(step, all_ranks=True, folder=folder, state=state)
    return float(state.value)


if __name__ == "__main__":
    main()
