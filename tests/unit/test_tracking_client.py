"""The in-job API outside slurmml (local runs) and inside (SLURMML_SPOOL), and the wrapper's start/end helpers."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from slurmml.tracking import client, spool

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("SLURMML_HOME", str(tmp_path / "home"))
    for name in (spool.SPOOL_ENV, spool.RUN_ID_ENV, client.RUN_DIR_ENV):
        monkeypatch.delenv(name, raising=False)
    client._reset()
    yield
    client._reset()


def records_of(path: Path) -> list[dict]:
    client.current_writer().flush()
    chunk = spool.parse_chunk(path.read_bytes())
    assert chunk.problems == []
    return chunk.records


def test_outside_slurmml_a_local_run_is_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_FAKE_TOKEN", "secret-value")
    monkeypatch.setattr(sys, "argv", ["train.py", "--api-key", "sk-1", "lr=0.1"])
    client.log(step=0, loss=1.5)
    run_id = client.run.id
    assert re.fullmatch(r"local-\d{8}-\d{6}-[0-9a-f]{4}", run_id)
    run_dir = tmp_path / "home" / "runs" / run_id
    assert client.run.dir == run_dir and client.run.config == {}
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    spool_path = run_dir / "spool.jsonl"
    records = records_of(spool_path)
    assert [r["k"] for r in records] == ["start", "m"]
    start = records[0]
    assert start["run_id"] == run_id and start["run_dir"] == str(run_dir)
    assert start["pid"] > 0 and start["host"] and start["cwd"]
    assert start["argv"] == ["train.py", "--api-key", "***", "lr=0.1"]
    environment = start["environment"]
    assert environment["python"] == sys.version.split()[0]
    assert "numpy" in environment["packages"] and "slurmml" in environment["packages"]
    assert environment["slurm"]["SLURM_JOB_ID"] == "4242"
    assert environment["slurm"]["SLURM_FAKE_TOKEN"] == "***"
    assert records[1]["s"] == 0 and records[1]["v"] == {"loss": 1.5}


def test_inside_slurmml_everything_goes_to_the_job_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool_path = tmp_path / "batch" / "spool" / "3.jsonl"
    monkeypatch.setenv(spool.SPOOL_ENV, str(spool_path))
    monkeypatch.setenv(spool.RUN_ID_ENV, "sweep1-3")
    artifact = tmp_path / "model.pt"
    artifact.write_bytes(b"x" * 1234)
    client.log(step=1, loss=0.5, acc=0.75)
    client.log_params(lr=0.001, optimizer={"name": "adam", "api_key": "sk"})
    client.log_artifact(artifact)
    client.log_artifact(tmp_path, name="outputs")
    assert client.run.id == "sweep1-3"
    records = records_of(spool_path)
    assert [r["k"] for r in records] == ["m", "p", "a", "a"]  # the wrapper writes start, not log()
    assert records[1]["v"] == {"lr": 0.001, "optimizer": {"name": "adam", "api_key": "***"}}
    assert records[2] == {"k": "a", "t": records[2]["t"], "name": "model.pt", "path": str(artifact), "size": 1234}
    assert records[3]["name"] == "outputs" and records[3]["size"] >= 1234
    assert not (tmp_path / "home" / "runs").exists()


def test_a_jobs_other_ranks_know_the_run_and_write_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 1 of a two-task job: the wrapper gives it the run's id and folder but not the spool (one writer)."""
    monkeypatch.setenv(spool.RUN_ID_ENV, "s1-0")
    monkeypatch.setenv(client.RUN_DIR_ENV, str(tmp_path / "run"))
    client.log(step=0, loss=1.0)
    client.log_params(lr=0.1)
    assert client.run.id == "s1-0" and client.run.dir == tmp_path / "run"
    assert not (tmp_path / "home" / "runs").exists()  # no stray local run of its own
    assert list(tmp_path.iterdir()) == []


def test_start_run_and_end_run(tmp_path: Path) -> None:
    spool_path = tmp_path / "spool" / "0.jsonl"
    config = {"lr": 0.1, "db": {"password": "hunter2"}}
    info = client.start_run(spool_path, "s-0", tmp_path / "run0", config, ["lr=0.1", "db.password=hunter2"])
    assert info.id == "s-0" and client.run.id == "s-0" and client.run.dir == tmp_path / "run0"
    assert client.run.config == {"lr": 0.1, "db": {"password": "***"}}
    assert client.current_writer().path == spool_path
    client.log(step=5, loss=0.1)
    client.end_run("FAILED", 1, "Traceback ...\nValueError: boom")
    chunk = spool.parse_chunk(spool_path.read_bytes())  # end_run flushed
    kinds = [r["k"] for r in chunk.records]
    assert kinds == ["start", "m", "end"]
    start, end = chunk.records[0], chunk.records[2]
    assert start["config"] == {"lr": 0.1, "db": {"password": "***"}}
    assert start["overrides"] == ["lr=0.1", "db.password=***"]
    assert set(start["environment"]) >= {"python", "packages", "slurm"}
    assert end == {"k": "end", "t": end["t"], "state": "FAILED", "exit_code": 1, "error": "Traceback ...\nValueError: boom",
                   "max_rss_mb": end["max_rss_mb"]}
    assert 10 < end["max_rss_mb"] < 10_000  # this test process's own peak, in MB
    assert config["db"]["password"] == "hunter2"


def test_log_accepts_numbers_and_scalars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    numpy = pytest.importorskip("numpy")
    spool_path = tmp_path / "s.jsonl"
    monkeypatch.setenv(spool.SPOOL_ENV, str(spool_path))
    client.log(step=numpy.int64(3), a=1, b=2.5, c=True, d=numpy.float32(0.5), e=numpy.array(4.0), f=float("nan"))
    client.log(**{"val/loss": 0.25})
    client.log(step=4)  # nothing to record
    records = records_of(spool_path)
    assert len(records) == 2
    assert records[0]["s"] == 3 and type(records[0]["s"]) is int
    values = records[0]["v"]
    assert values["a"] == 1 and values["b"] == 2.5 and values["c"] == 1.0 and values["d"] == 0.5 and values["e"] == 4.0
    assert values["f"] != values["f"]  # NaN survives the round trip
    assert records[1] == {"k": "m", "t": records[1]["t"], "s": None, "v": {"val/loss": 0.25}}


def test_log_accepts_torch_scalars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    spool_path = tmp_path / "s.jsonl"
    monkeypatch.setenv(spool.SPOOL_ENV, str(spool_path))
    client.log(step=torch.tensor(2), loss=torch.tensor(0.5), acc=torch.tensor([0.25]).squeeze())
    assert records_of(spool_path)[0]["v"] == {"loss": 0.5, "acc": 0.25}
    with pytest.raises(TypeError, match="'batch'"):
        client.log(batch=torch.ones(3))


@pytest.mark.parametrize("value", ["0.5", b"1", None, [1.0], {"a": 1}, 1 + 2j, object()])
def test_log_rejects_non_numbers(value, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(spool.SPOOL_ENV, str(tmp_path / "s.jsonl"))
    with pytest.raises(TypeError, match=r"slurmml.log: metric 'loss' must be a number"):
        client.log(step=1, loss=value, acc=0.5)


@pytest.mark.parametrize("step", [1.5, "3"])
def test_log_rejects_non_integer_steps(step, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(spool.SPOOL_ENV, str(tmp_path / "s.jsonl"))
    with pytest.raises(TypeError, match="step must be an integer"):
        client.log(step=step, loss=1.0)


def test_missing_artifact_is_recorded_without_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    spool_path = tmp_path / "s.jsonl"
    monkeypatch.setenv(spool.SPOOL_ENV, str(spool_path))
    client.log_artifact(tmp_path / "nope.pt")
    assert records_of(spool_path)[0]["size"] is None
    assert "cannot read" in capsys.readouterr().err


def test_plain_script_end_to_end(tmp_path: Path) -> None:
    """A plain `python train.py` using the top-level API: records are on disk when it exits, without any flush."""
    script = tmp_path / "train.py"
    script.write_text(
        "from slurmml.tracking import client as slurmml\n"
        "slurmml.log_params(lr=0.1)\n"
        "for step in range(100):\n"
        "    slurmml.log(step=step, loss=1.0 / (step + 1))\n"
        "print(slurmml.run.id)\n"
    )
    env = {**os.environ, "SLURMML_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    env.pop(spool.SPOOL_ENV, None)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    run_id = result.stdout.strip()
    chunk = spool.parse_chunk((tmp_path / "home" / "runs" / run_id / "spool.jsonl").read_bytes())
    assert chunk.problems == []
    assert [r["k"] for r in chunk.records] == ["start", "p"] + ["m"] * 100 + ["end"]  # the run ends with the interpreter


def test_in_job_modules_import_nothing_heavy() -> None:
    code = ("import slurmml.tracking.client, slurmml.tracking.gpu, slurmml.tracking.writer, sys; "
            "print('\\n'.join(sys.modules))")
    modules = set(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split())
    assert modules & {"pynvml", "torch", "numpy", "hydra", "omegaconf", "submitit", "rich", "sqlite3",
                      "importlib.metadata"} == set()
