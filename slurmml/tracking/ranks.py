"""What the ranks of a torch.distributed job agree on at a checkpoint point: small collectives, used by the requeue
(tracking/requeue.py) and live controls (tracking/controls.py). torch is never imported here: a job that has not
imported it has no other ranks to ask."""

from __future__ import annotations

import sys
from typing import Any


def distributed() -> Any:
    torch = sys.modules.get("torch")  # never imported here: a job without torch has no other ranks to ask
    if torch is None:
        return None
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    return dist


def _tensor(value: float) -> Any:
    import torch

    dist = torch.distributed
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    return torch.tensor([value], dtype=torch.float64, device=device)  # a Unix time keeps its fraction


def agree(flag: bool) -> bool:
    dist = distributed()
    if dist is None:
        return flag
    tensor = _tensor(int(flag))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def barrier() -> None:
    dist = distributed()
    if dist is not None:
        dist.barrier()


def flag_from_rank_zero(flag: bool) -> bool:
    return bool(value_from_rank_zero(float(flag)))


def value_from_rank_zero(value: float) -> float:
    dist = distributed()
    if dist is None:
        return value
    tensor = _tensor(value)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())
