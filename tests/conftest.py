"""Shared fixtures. Tests marked `slurm` run against the real dev cluster (`slurmml cluster up`).

Without a cluster they skip, unless SLURMML_REQUIRE_SLURM=1 (CI sets it): then they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.slurm_calls import SlurmCallCounter
from slurmml.slurm.commands import available, run_command

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SLURM = os.environ.get("SLURMML_REQUIRE_SLURM") == "1"


@pytest.fixture(autouse=True, scope="session")
def _private_slurmml_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["SLURMML_HOME"] = str(tmp_path_factory.mktemp("slurmml_home"))


def _cluster_problem() -> str | None:
    if not available("sbatch"):
        return "sbatch not on PATH"
    sinfo = run_command(["sinfo", "--noheader", "--format=%T"])
    if not sinfo.ok:
        return f"sinfo failed: {sinfo.stderr.strip()}"
    if not any(state.strip().rstrip("*") in {"idle", "mixed", "allocated"} for state in sinfo.stdout.splitlines()):
        return f"no usable node (sinfo: {sinfo.stdout.strip()})"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    problem = _cluster_problem()
    if problem:
        message = f"dev cluster not available ({problem}); run `slurmml cluster up`"
        if REQUIRE_SLURM:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A real S3 HTTP server (moto's, auth on) on a free port of 127.0.0.1, with bucket `tests`, for this session."""
    from slurmml.devcluster import s3server

    server = s3server.start(s3server.free_port(), tmp_path_factory.mktemp("s3") / "s3.log", buckets=("tests",))
    yield server
    s3server.stop(server.pid)


@pytest.fixture
def s3_store(s3_server, monkeypatch: pytest.MonkeyPatch):
    """This test's own prefix of the session's S3 server, in the environment (children and jobs inherit it);
    returns the ObjectStore. Credentials come through boto3's chain (AWS_* variables), as they would for a user."""
    from slurmml.storage.s3 import open_store

    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "SLURMML_S3_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.environment("tests", f"t-{uuid.uuid4().hex[:10]}").items():
        monkeypatch.setenv(name, value)
    return open_store()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With SLURMML_REQUIRE_SLURM=1 a skipped test fails the run: CI must not pass by skipping."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if REQUIRE_SLURM and skipped:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nslurmml: {len(skipped)} test(s) skipped while SLURMML_REQUIRE_SLURM=1: failing the run")


@pytest.fixture
def slurm_calls(tmp_path: Path) -> SlurmCallCounter:
    return SlurmCallCounter(tmp_path / "slurm_calls")


@pytest.fixture
def unique_name() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def copy_app(name: str, folder: Path) -> Path:
    """Copy tests/apps/<name>.py and its <name>.yaml into `folder` (created), the app's working directory."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".py", ".yaml"):
        shutil.copy(ROOT / "tests" / "apps" / f"{name}{suffix}", folder / f"{name}{suffix}")
    return folder


def run_app(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def sacct_states(job_name: str) -> dict[str, str]:
    """Final state of every allocation with this job name, by job id."""
    result = run_command(
        ["sacct", "--noheader", "--parsable2", "--allocations", "--starttime=now-1days",
         f"--name={job_name}", "--format=JobID,State"]
    )
    assert result.ok, result.stderr
    return dict(line.split("|")[:2] for line in result.stdout.splitlines() if line.strip())


def sacct_when(job_name: str, count: int, timeout_s: float = 120, done: bool = False) -> dict[str, str]:
    """Wait until sacct lists `count` allocations with this name (all ended, if `done`), and return their states."""

    def ready() -> dict[str, str] | None:
        states = sacct_states(job_name)
        ended = all(s not in {"PENDING", "RUNNING", "REQUEUED"} for s in states.values())
        return states if len(states) == count and (ended or not done) else None

    return wait_until(ready, timeout_s, what=f"{count} job(s) named {job_name} in sacct")


def wait_until(predicate, timeout_s: float, interval_s: float = 2.0, what: str = "condition"):
    """Poll until predicate() returns something true, and return it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def sweep_runs(sweep: str) -> list[dict]:
    """The sweep's runs, in job-number order, each as `Registry.run` shows it, after an ingest."""
    from slurmml.registry.registry import Registry

    with Registry(Path(os.environ["SLURMML_HOME"]) / "registry.db", create=False) as registry:
        registry.ingest()
        return [registry.run(row["id"]) for row in sorted(registry.runs(sweep=sweep), key=lambda r: r["job_num"])]


def ended_runs(sweep: str) -> list[dict] | None:
    """The sweep's runs once none is active (after a round of the shared poller, as every view does), else None."""
    from slurmml.poller.loop import catch_up
    from slurmml.registry.registry import Registry

    with Registry(Path(os.environ["SLURMML_HOME"]) / "registry.db", create=False) as registry:
        catch_up(registry, sweep_ids=[sweep])
    runs = sweep_runs(sweep)
    return runs if all(r["state"] not in ("SUBMITTING", "QUEUED", "RUNNING") for r in runs) else None
