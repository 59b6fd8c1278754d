"""A Hydra app whose tasks join one torch.distributed group and sum their ranks (distributed tests)."""

import os

import hydra
import torch
import torch.distributed as dist

import slurmml


@hydra.main(version_base="1.3", config_path=".", config_name="ddp")
def main(cfg) -> float:
    # the job wrapper has exported the rendezvous already: init_process_group() alone would work too
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK") if name not in os.environ]
    assert not missing, f"not exported by the job wrapper: {missing}"
    rank, world_size = slurmml.init_distributed()
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)  # every rank ends with 1 + 2 + ... + world_size
    expected = world_size * (world_size + 1) / 2
    assert total.item() == expected, f"rank {rank}: all_reduce gave {total.item()}, not {expected}"
    if rank == 0:
        slurmml.log(world_size=world_size, sum=total.item())
    dist.destroy_process_group()
    return total.item()


if __name__ == "__main__":
    main()
