"""A small, fast Hydra training app for trying out slurmml.

Trains a classifier (an MLP or a linear model) on a noisy multi-class spiral
that is generated from ``seed``, so no data has to be downloaded and the same
seed always gives the same result. Training takes well under a second on one
CPU core; importing torch takes longer.
The app prints and logs (``slurmml.log``) one line per epoch and returns the final validation accuracy,
which Hydra launchers and optimizing sweepers receive as the job's return value.

It is also a long job: it saves a checkpoint every epoch (``slurmml.checkpoint_point``) and resumes from the
newest one, so a run that Slurm's time limit or a preemption stops is requeued and goes on where it was.
``max_minutes`` trains until that much training time has passed across all executions (or the epochs run
out). With several tasks (``hydra.launcher.nodes=2 hydra.launcher.tasks_per_node=2``) it trains with DDP,
each rank on its share of every batch.

    python examples/train.py
    python examples/train.py -m seed=1,2,3
    python examples/train.py -m model=mlp,linear optimizer.lr=1e-2,1e-3
    python examples/train.py -m hydra/launcher=slurmml hydra.launcher.timeout_min=1 \
        hydra.launcher.max_num_timeout=5 max_minutes=3 epochs=100000

Config groups live in ``examples/conf``: ``model`` (mlp, linear) and
``optimizer`` (adam, sgd). ``fail_at_epoch=N`` makes the run raise at epoch N.
"""

import math
import os
import random
import time

import hydra
from hydra.core.hydra_config import HydraConfig
import torch

import slurmml
from omegaconf import DictConfig
from torch import nn


def make_spiral(n_samples: int, n_classes: int, noise: float, gen: torch.Generator):
    """Points on ``n_classes`` interleaved spiral arms (one full turn each).

    The label is the arm; Gaussian noise on the angle makes the arms overlap.
    """
    labels = torch.randint(n_classes, (n_samples,), generator=gen)
    radius = torch.rand(n_samples, generator=gen)
    angle = (
        radius * 2 * math.pi
        + labels * (2 * math.pi / n_classes)
        + noise * torch.randn(n_samples, generator=gen)
    )
    x = torch.stack([radius * torch.sin(angle), radius * torch.cos(angle)], dim=1)
    return x, labels


def load_points(folder) -> tuple[torch.Tensor, torch.Tensor]:
    """The points of a dataset made by make_dataset.py: `spiral.pt` holds the tensors x and y."""
    data = torch.load(os.path.join(folder, "spiral.pt"))
    return data["x"], data["y"]


def build_model(cfg: DictConfig, n_classes: int) -> nn.Module:
    if cfg.name == "linear":
        return nn.Linear(2, n_classes)
    if cfg.name == "mlp":
        layers, width = [], 2
        for _ in range(cfg.depth):
            layers += [nn.Linear(width, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = cfg.hidden
        return nn.Sequential(*layers, nn.Linear(width, n_classes))
    raise ValueError(f"unknown model: {cfg.name}")


def build_optimizer(cfg: DictConfig, params) -> torch.optim.Optimizer:
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"unknown optimizer: {cfg.name}")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, loss) on the whole validation set: the same on every rank."""
    model.eval()
    logits = model(x)
    return (logits.argmax(dim=1) == y).float().mean().item(), nn.functional.cross_entropy(logits, y).item()


def set_learning_rate(optimizer: torch.optim.Optimizer, lr) -> None:
    """A live change of the learning rate; refused (the sender is told why) unless it is a positive number."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"the learning rate must be a positive number, not {lr!r}")
    for group in optimizer.param_groups:
        group["lr"] = float(lr)


def time_is_up(cfg: DictConfig, trained_s: float) -> bool:
    return cfg.max_minutes is not None and trained_s >= cfg.max_minutes * 60


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    torch.set_num_threads(1)  # many of these run side by side on a few cores
    rank, world = slurmml.init_distributed() if int(os.environ.get("WORLD_SIZE", "1")) > 1 else (0, 1)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    gen = torch.Generator().manual_seed(cfg.seed)

    if cfg.dataset:  # a registered dataset version, e.g. dataset=spiral@v2: the run records which one it read
        x, y = load_points(slurmml.dataset(cfg.dataset))
    else:
        x, y = make_spiral(cfg.n_samples, cfg.n_classes, cfg.noise, gen)
    n_val = int(len(x) * cfg.val_fraction)
    x_val, y_val, x_train, y_train = x[:n_val], y[:n_val], x[n_val:], y[n_val:]

    model = build_model(cfg.model, cfg.n_classes)
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    # `slurmml set RUN optimizer.lr=0.001` changes the learning rate while the run trains (at its next epoch's end)
    slurmml.on_set("optimizer.lr", lambda lr: set_learning_rate(optimizer, lr))

    # a requeued run goes on from its newest checkpoint: weights, optimizer, batch order, time trained
    first_epoch, trained_s = 1, 0.0
    resumed = slurmml.load_checkpoint(model=model, optimizer=optimizer)
    if resumed is not None:
        first_epoch, trained_s = resumed.step + 1, resumed.values["trained_s"]
        gen.set_state(resumed.values["batch_order"])
        print(f"resumed from epoch {resumed.step} ({trained_s:.0f} s trained)", flush=True)
    if world > 1:  # gradients are averaged over the ranks: together they train on the whole batch
        model = nn.parallel.DistributedDataParallel(model)

    val_acc, _ = evaluate(model, x_val, y_val)
    since = time.monotonic()  # training time counts every epoch's work, its checkpoint included
    for epoch in range(first_epoch, cfg.epochs + 1):
        if time_is_up(cfg, trained_s):
            break
        if cfg.fail_at_epoch is not None and epoch == cfg.fail_at_epoch:
            raise RuntimeError(f"failing on purpose at epoch {epoch} (fail_at_epoch)")
        model.train()
        total = 0.0
        for idx in torch.randperm(len(x_train), generator=gen).split(cfg.batch_size):
            mine = idx[rank::world]  # this rank's share of the batch
            loss = loss_fn(model(x_train[mine]), y_train[mine])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        val_acc, val_loss = evaluate(model, x_val, y_val)
        if cfg.epoch_s:  # pace the epoch (see config.yaml)
            time.sleep(max(0.0, cfg.epoch_s - (time.monotonic() - since)))
        trained_s, since = trained_s + time.monotonic() - since, time.monotonic()
        if world > 1:  # every rank must stop at the same epoch: they agree on the slowest one's time
            spent = torch.tensor([trained_s])
            torch.distributed.all_reduce(spent, op=torch.distributed.ReduceOp.MAX)
            trained_s = spent.item()
        slurmml.log(step=epoch, loss=total / len(x_train), val_loss=val_loss, val_acc=val_acc, trained_s=trained_s,
                    lr=optimizer.param_groups[0]["lr"])
        print(f"epoch {epoch}/{cfg.epochs} loss={total / len(x_train):.4f} val_acc={val_acc:.4f}", flush=True)
        # saves every epoch; when Slurm warns of the time limit or a preemption, also requeues and ends here; live
        # controls (slurmml set / snapshot / stop, and early stopping's graceful stop) take effect here too
        slurmml.checkpoint_point(epoch, every=1, model=getattr(model, "module", model), optimizer=optimizer,
                                 trained_s=trained_s, batch_order=gen.get_state())

    if rank == 0 and cfg.save_model:  # the trained weights as the run's artifact (uploaded with upload=true)
        path = os.path.join(HydraConfig.get().runtime.output_dir, "model.pt")
        torch.save(getattr(model, "module", model).state_dict(), path)
        slurmml.log_artifact(path, upload=cfg.upload_model)
    print(f"val_acc={val_acc:.4f}", flush=True)
    return val_acc


if __name__ == "__main__":
    main()
