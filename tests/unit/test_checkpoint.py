"""Checkpoints: round trips of torch state and RNG, pruning, torn and corrupt files, unwritable folders,
config drift on resume, ranks, and a light `import slurmml`."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import slurmml
from slurmml.errors import SlurmmlError
from slurmml.tracking import checkpoint, client, spool


@pytest.fixture(autouse=True)
def fresh_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("SLURMML_HOME", str(tmp_path / "home"))
    for name in (spool.SPOOL_ENV, spool.RUN_ID_ENV, client.RUN_DIR_ENV, "RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    client._reset()
    yield
    client._reset()


def trained(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(8, 4)).pow(2).sum().backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def files_in(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_round_trip_of_model_optimizer_scheduler_and_values(tmp_path: Path) -> None:
    model, optimizer, scheduler = trained()
    path = slurmml.save_checkpoint(7, folder=tmp_path, model=model, optimizer=optimizer, scheduler=scheduler,
                                   epoch=2, note={"best": 0.5})
    assert path == tmp_path / "step_000000007.pt"
    fresh_model, fresh_optimizer, fresh_scheduler = trained(seed=1)
    ckpt = slurmml.load_checkpoint(folder=tmp_path, model=fresh_model, optimizer=fresh_optimizer,
                                   scheduler=fresh_scheduler)
    assert ckpt is not None and ckpt.step == 7 and ckpt.path == path
    assert ckpt.values == {"epoch": 2, "note": {"best": 0.5}}
    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh_model.state_dict()[name], tensor)
    saved_state = optimizer.state_dict()["state"]
    for index, state in fresh_optimizer.state_dict()["state"].items():
        assert torch.equal(state["exp_avg"], saved_state[index]["exp_avg"])
    assert fresh_scheduler.state_dict() == scheduler.state_dict()
    assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] == 0.01 * 0.5 ** 3


def test_random_states_continue_after_a_load(tmp_path: Path) -> None:
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    slurmml.save_checkpoint(1, folder=tmp_path)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.rand(100), random.random(), np.random.rand(100)
    slurmml.load_checkpoint(folder=tmp_path)
    assert torch.equal(torch.rand(3), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]


def test_restore_rng_false_leaves_the_random_states_alone(tmp_path: Path) -> None:
    slurmml.save_checkpoint(1, folder=tmp_path)
    random.seed(11)
    expected = random.random()
    random.seed(11)
    slurmml.load_checkpoint(folder=tmp_path, restore_rng=False)
    assert random.random() == expected


def test_keep_prunes_to_the_newest(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 1)
    for step in (10, 20, 30, 40):
        slurmml.save_checkpoint(step, keep=2, folder=tmp_path, model=model)
    assert files_in(tmp_path) == ["step_000000030.pt", "step_000000040.pt"]
    for step in (50, 60):
        slurmml.save_checkpoint(step, keep=None, folder=tmp_path, model=model)
    assert len(files_in(tmp_path)) == 4


def test_the_one_just_written_is_kept_even_below_newer_ones(tmp_path: Path) -> None:
    """A run resumed from an older step must not delete what it just saved."""
    for step in (5, 6):
        slurmml.save_checkpoint(step, keep=1, folder=tmp_path, all_ranks=True)
    slurmml.save_checkpoint(3, keep=1, folder=tmp_path)
    assert files_in(tmp_path) == ["step_000000003.pt", "step_000000006.pt"]


def test_a_stale_temporary_file_is_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".step_000000004.pt.tmp-123-abcdef"
    stale.write_bytes(b"half")
    os.utime(stale, (1, 1))
    fresh = tmp_path / ".step_000000005.pt.tmp-124-abcdef"
    fresh.write_bytes(b"being written")
    slurmml.save_checkpoint(6, folder=tmp_path)
    assert files_in(tmp_path) == [fresh.name, "step_000000006.pt"]


@pytest.mark.parametrize("damage, reason", [
    ("truncated", "cut short"), ("last bytes lost", "cut short"), ("random bytes", "not a checkpoint file"),
    ("empty", "empty file"), ("pickle header only", "pickle data was truncated")])
def test_a_damaged_newest_checkpoint_falls_back_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, reason: str) -> None:
    model = torch.nn.Linear(3, 3)
    slurmml.save_checkpoint(1, folder=tmp_path, model=model, epoch=1)
    good = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    newest = slurmml.save_checkpoint(2, folder=tmp_path, model=model, epoch=2)
    data = newest.read_bytes()
    newest.write_bytes({"truncated": data[: len(data) // 2], "last bytes lost": data[:-20],
                        "random bytes": b"\0" + os.urandom(len(data)), "empty": b"",
                        "pickle header only": b"\x80\x05\x95"}[damage])
    capsys.readouterr()
    ckpt = slurmml.load_checkpoint(folder=tmp_path, model=model)
    assert ckpt is not None and ckpt.step == 1 and ckpt.values == {"epoch": 1}
    assert torch.equal(model.weight, good["weight"])
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"slurmml: load_checkpoint: skipping {newest}: "), lines
    assert f"truncated or corrupt ({reason}" in lines[0]


def test_no_checkpoint_gives_none_and_a_file_given_as_folder_raises(tmp_path: Path) -> None:
    assert slurmml.load_checkpoint(folder=tmp_path / "never made") is None
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a checkpoint")
    assert slurmml.load_checkpoint(folder=tmp_path / "empty") is None
    with pytest.raises(SlurmmlError, match=r"cannot read the checkpoint folder .*notes.txt: Not a directory"):
        slurmml.load_checkpoint(folder=tmp_path / "empty" / "notes.txt")


def test_an_unwritable_folder_raises_one_line(tmp_path: Path) -> None:
    (tmp_path / "a file").write_text("")
    with pytest.raises(SlurmmlError) as raised:
        slurmml.save_checkpoint(1, folder=tmp_path / "a file" / "checkpoints")
    message = str(raised.value)
    assert "\n" not in message and str(tmp_path / "a file" / "checkpoints") in message and "Not a directory" in message


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slurmml.save_checkpoint(1, folder=tmp_path)

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(SlurmmlError, match="No space left on device"):
        slurmml.save_checkpoint(2, folder=tmp_path, model=torch.nn.Linear(2, 2))
    assert files_in(tmp_path) == ["step_000000001.pt"]


def test_a_changed_config_is_named_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    client.start_run(tmp_path / "a.jsonl", "s-0", run_dir, {"lr": 0.1, "model": {"depth": 2, "width": 8}})
    path = slurmml.save_checkpoint(4, model=torch.nn.Linear(2, 2))
    assert path == run_dir / "checkpoints" / "step_000000004.pt"
    client._reset()
    client.start_run(tmp_path / "b.jsonl", "s-0", run_dir, {"lr": 0.2, "model": {"depth": 3, "width": 8}, "seed": 1})
    capsys.readouterr()
    assert slurmml.load_checkpoint().step == 4
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["slurmml: load_checkpoint: step_000000004.pt was saved with a different config: "
                     "lr, model.depth, seed"]
    client._reset()
    client.start_run(tmp_path / "c.jsonl", "s-0", run_dir, {f"k{i}": i for i in range(8)})
    slurmml.load_checkpoint()
    assert capsys.readouterr().err.rstrip().endswith(": k0, k1, k2, k3, k4 and 6 more")  # k5-k7 and the three old keys


def test_the_same_config_says_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client.start_run(tmp_path / "a.jsonl", "s-0", tmp_path / "run", {"api_key": "sk-1", "lr": 0.1})
    slurmml.save_checkpoint(1)
    capsys.readouterr()
    assert slurmml.load_checkpoint().step == 1
    assert capsys.readouterr().err == ""


def test_outside_slurmml_the_default_folder_is_the_local_runs(tmp_path: Path) -> None:
    path = slurmml.save_checkpoint(2)
    assert path == client.run.dir / "checkpoints" / "step_000000002.pt"
    assert client.run.dir.parent == tmp_path / "home" / "runs"


@pytest.mark.parametrize("variable", ["RANK", "SLURM_PROCID"])
def test_other_ranks_write_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "1")
    assert slurmml.save_checkpoint(1, folder=tmp_path / "ckpt") is None
    assert not (tmp_path / "ckpt").exists()
    assert slurmml.save_checkpoint(1, folder=tmp_path / "ckpt", all_ranks=True).is_file()


def test_torchrun_rank_wins_over_the_slurm_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("RANK", "3")
    assert slurmml.save_checkpoint(1, folder=tmp_path) is None


def test_loading_a_name_the_checkpoint_lacks_raises(tmp_path: Path) -> None:
    slurmml.save_checkpoint(1, folder=tmp_path, model=torch.nn.Linear(2, 2), epoch=0)
    with pytest.raises(SlurmmlError, match=r"no state_dict named 'scaler' \(it holds model\)"):
        slurmml.load_checkpoint(folder=tmp_path, scaler=torch.amp.GradScaler("cpu"))


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="step must be an integer"):
        slurmml.save_checkpoint(1.5, folder=tmp_path)
    with pytest.raises(ValueError, match="keep must be at least 1"):
        slurmml.save_checkpoint(1, keep=0, folder=tmp_path)


def run_python(code: str, **env: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_stays_light_and_plain_state_needs_no_torch(tmp_path: Path) -> None:
    """Without torch imported, plain values are pickled, and neither torch nor numpy is imported to do it."""
    code = f"""
import random, sys
import slurmml
assert slurmml.save_checkpoint and slurmml.load_checkpoint
assert 'torch' not in sys.modules and 'numpy' not in sys.modules
random.seed(5)
slurmml.save_checkpoint(9, folder={str(tmp_path)!r}, epoch=3, history=[1.0, 0.5])
expected = random.random()
random.random()
ckpt = slurmml.load_checkpoint(folder={str(tmp_path)!r})
assert ckpt.step == 9 and ckpt.values == {{'epoch': 3, 'history': [1.0, 0.5]}}, ckpt
assert random.random() == expected
assert 'torch' not in sys.modules and 'numpy' not in sys.modules
"""
    run_python(code, SLURMML_HOME=str(tmp_path / "home"))
    assert (tmp_path / "step_000000009.pt").read_bytes()[:1] == b"\x80"  # a pickle, not torch's zip
    ckpt = slurmml.load_checkpoint(folder=tmp_path)  # and torch's side reads it too
    assert ckpt.step == 9


def test_the_package_root_maps_the_names() -> None:
    assert slurmml.save_checkpoint is checkpoint.save_checkpoint
    assert slurmml.load_checkpoint is checkpoint.load_checkpoint


def test_a_torch_checkpoint_without_torch_says_so(tmp_path: Path) -> None:
    slurmml.save_checkpoint(1, folder=tmp_path, model=torch.nn.Linear(2, 2))
    code = f"""
import sys
sys.modules['torch'] = None  # as if torch were not installed
import slurmml
from slurmml.errors import SlurmmlError
try:
    slurmml.load_checkpoint(folder={str(tmp_path)!r})
except SlurmmlError as error:
    print(error)
"""
    assert run_python(code).strip() == f"checkpoint {tmp_path / 'step_000000001.pt'} was saved with torch, which is not installed here"
