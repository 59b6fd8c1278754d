"""Launch one batch of a Hydra sweep: plan, stage, submit (or run locally), collect.

Recording, staging and submitting go through pipeline.launch_batch, as a clone's do.

This is what the Hydra plugin classes call; submitit, Rich and cloudpickle are
imported here, never at plugin discovery.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from slurmml.errors import SlurmmlError
from slurmml.launcher import batch
from slurmml.launcher.outcome import QueuedTask, job_returns, queued_returns
from slurmml.launcher.pipeline import BatchTarget, launch_batch
from slurmml.launcher.recording import record_sweep, sweep_id_for, sweeper_direction
from slurmml.tracking.secrets import mask_overrides

log = logging.getLogger("slurmml.launcher")


def _sweep_dir(config: Any) -> Path:
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if "mode" in config.hydra.sweep and config.hydra.sweep.mode is not None:
        os.chmod(sweep_dir, int(str(config.hydra.sweep.mode), 8))
    return sweep_dir


def _payload(
    launcher: Any, conf: Mapping[str, Any], job_overrides: Sequence[Sequence[str]], initial_job_idx: int, sweep_id: str
) -> batch.Payload:
    from hydra.core.singleton import Singleton

    return batch.Payload(
        hydra_context=launcher.hydra_context,
        task_function=launcher.task_function,
        config=launcher.config,
        singleton_state=Singleton.get_state(),
        overrides=[list(o) for o in job_overrides],
        initial_job_idx=initial_job_idx,
        import_path=batch.import_path(sys.argv, os.getcwd()),
        max_requeues=int(conf.get("max_num_timeout") or 0),
        sweep_id=sweep_id,
        gpu_sample_interval_s=float(conf.get("gpu_sample_interval_s") or 5.0),
        launcher=dict(conf),
    )


def _stage_datasets(conf: Mapping[str, Any]) -> None:
    """The dataset versions the sweep declares (hydra.launcher.datasets), in the shared cache before any task starts,
    with their aliases pinned, so tasks read them without the object store; one line if one cannot be staged."""
    specs = [str(spec) for spec in conf.get("datasets") or []]
    if not specs:
        return
    from slurmml.storage.data_cache import stage

    for staged in stage(specs):
        print(f"slurmml: staged dataset {staged.name}@v{staged.version} in {staged.path}", file=sys.stderr)


def _log_tasks(job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> None:
    from hydra.core.utils import filter_overrides

    for index, overrides in enumerate(job_overrides):
        log.info(f"\t#{initial_job_idx + index} : {' '.join(mask_overrides(filter_overrides(overrides)))}")


def launch_on_slurm(
    launcher: Any, conf: Mapping[str, Any], job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> list[Any]:
    from slurmml.launcher.plan import (
        check_fields, check_poll_interval, check_request, early_stop_rule, split_into_arrays, throttle_note,
    )
    from slurmml.home import slurmml_home
    from slurmml.launcher.slurm_backend import check_known_fields, script_maker, submit_arrays
    from slurmml.launcher.templates import load_template
    from slurmml.slurm.cluster import ClusterFacts, read_cluster_facts
    from slurmml.slurm.commands import available

    # what the config and this user's state say first, then what this machine has
    check_fields(conf)
    check_known_fields(conf)
    early_stop_rule(conf, sweeper_direction(launcher.config))
    if conf.get("wait"):
        check_poll_interval(conf.get("poll_interval_s", 10.0))
    template = load_template(conf.get("template"))
    if not conf.get("dry_run"):
        slurmml_home()  # one line if SLURMML_HOME is unusable, before Slurm is asked anything
    on_slurm = available("sbatch")
    if not on_slurm and not conf.get("dry_run"):
        raise SlurmmlError(
            "sbatch not found on PATH: this machine cannot submit to Slurm "
            "(run the sweep here with hydra/launcher=slurmml_local)"
        )
    facts = read_cluster_facts() if on_slurm else ClusterFacts()
    problem = check_request(conf, facts.partitions)
    if problem:
        raise SlurmmlError(problem)

    sweep_dir = _sweep_dir(launcher.config)
    array_cap = min(facts.max_array_size, conf.get("max_array_size") or facts.max_array_size)
    chunks = split_into_arrays(len(job_overrides), array_cap)
    maker = script_maker(conf, template)
    if conf.get("dry_run"):
        preview_dir = batch.batch_dir_for(sweep_dir, "<sweep id>", initial_job_idx)
        for number, chunk in enumerate(chunks):
            print(f"# --- dry run: sbatch script {number + 1} of {len(chunks)} (nothing submitted) ---")
            print(maker.render(preview_dir, chunk))
        return queued_returns(job_overrides, [QueuedTask("dry-run", "", initial_job_idx + i) for i in range(len(job_overrides))])

    _stage_datasets(conf)
    _log_tasks(job_overrides, initial_job_idx)
    created = batch.missing_folders(maker.log_dir, sweep_dir / ".slurmml")
    target = _target(sweep_dir, job_overrides, initial_job_idx)
    sweep_id, batch_dir, run_ids = target.sweep_id, target.batch_dir, target.run_ids
    registry, submissions = launch_batch(
        target, _payload(launcher, conf, job_overrides, initial_job_idx, sweep_id), "slurm",
        record=lambda rows: record_sweep(sweep_id, sweep_dir, "slurm", conf, rows, sweeper_direction(launcher.config)),
        submit=lambda staged: submit_arrays(maker, staged, chunks), created=created)

    ids = ", ".join(f"{s.job_id} ({s.count} task{'s' if s.count > 1 else ''})" for s in submissions)
    throttle = throttle_note(conf.get("array_parallelism"), [s.count for s in submissions])
    if not conf.get("wait"):
        print(
            f"slurmml: queued sweep {sweep_id}: {len(job_overrides)} task(s) as job {ids}{throttle}\n"
            f"  outputs: {sweep_dir}\n"
            f"  watch:   slurmml status {sweep_id}",
            file=sys.stderr,
        )
        queued = []
        for sub in submissions:
            for index in range(sub.offset, sub.offset + sub.count):
                queued.append(QueuedTask(sweep_id, sub.task_job_id(index), initial_job_idx + index))
        return queued_returns(job_overrides, queued)

    from slurmml.launcher.waiting import BatchWaiter

    log.info(f"slurmml: sweep {sweep_id} queued as job {ids}; waiting for it to end")
    from slurmml.poller.loop import Poller

    poller = Poller(registry, squeue_interval_s=conf.get("poll_interval_s", 10.0))
    waiter = BatchWaiter(batch_dir, registry, run_ids, poller)
    try:
        with _progress(f"sweep {sweep_id}", len(job_overrides)) as advance:
            lost = waiter.wait(on_progress=advance)
    except KeyboardInterrupt:
        job_ids = " ".join(s.job_id for s in submissions)
        print(f"\nslurmml: stopped waiting; the jobs keep running (slurmml status {sweep_id}; scancel {job_ids} stops them)",
              file=sys.stderr)
        raise SystemExit(130) from None
    returns = job_returns(batch_dir, job_overrides, lost, _stopped(registry, sweep_id, batch_dir, run_ids, launcher.config))
    _record_outcome(registry, sweep_id, {run_ids[i]: reason for i, reason in lost.items()})
    logs = {i: sub.log_file(i) for sub in submissions for i in range(sub.offset, sub.offset + sub.count)}
    _summarize(sweep_id, sweep_dir, initial_job_idx, returns, logs)
    return returns


def launch_locally(
    launcher: Any, conf: Mapping[str, Any], job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> list[Any]:
    from slurmml.launcher.local_backend import local_log_paths, run_batch_locally
    from slurmml.launcher.plan import check_fields, early_stop_rule

    check_fields(conf)
    early_stop_rule(conf, sweeper_direction(launcher.config))
    sweep_dir = _sweep_dir(launcher.config)
    parallelism = conf.get("array_parallelism") or os.cpu_count() or 1
    if conf.get("dry_run"):
        for index, overrides in enumerate(job_overrides):
            print(f"# dry run, task #{initial_job_idx + index}: {' '.join(overrides)}")
        return queued_returns(job_overrides, [QueuedTask("dry-run", "", initial_job_idx + i) for i in range(len(job_overrides))])

    _stage_datasets(conf)
    _log_tasks(job_overrides, initial_job_idx)
    created = batch.missing_folders(sweep_dir / ".slurmml")
    target = _target(sweep_dir, job_overrides, initial_job_idx)
    sweep_id, batch_dir, run_ids = target.sweep_id, target.batch_dir, target.run_ids
    registry, _ = launch_batch(  # its tasks run below: nothing to submit
        target, _payload(launcher, conf, job_overrides, initial_job_idx, sweep_id), "local",
        record=lambda rows: record_sweep(sweep_id, sweep_dir, "local", conf, rows, sweeper_direction(launcher.config)),
        submit=lambda staged: None, created=created)
    log.info(f"slurmml: running sweep {sweep_id} here, {parallelism} task(s) at a time; outputs in {sweep_dir}")
    done = [0]
    with _progress(f"sweep {sweep_id}", len(job_overrides)) as advance:
        def on_done(index: int, problem: Any) -> None:
            done[0] += 1
            advance(done[0], 0)

        problems = run_batch_locally(batch_dir, len(job_overrides), parallelism, conf.get("timeout_min", 60) * 60.0, on_done)
    returns = job_returns(batch_dir, job_overrides, problems, _stopped(registry, sweep_id, batch_dir, run_ids, launcher.config))
    _record_outcome(registry, sweep_id, {run_ids[i]: reason for i, reason in problems.items()})
    _summarize(sweep_id, sweep_dir, initial_job_idx, returns, {i: str(local_log_paths(batch_dir, i)[1]) for i in range(len(returns))})
    return returns


def _stopped(registry: Any, sweep_id: str, batch_dir: Path, run_ids: list[str], config: Any) -> dict[int, Any]:
    """The tasks without a result that ended STOPPED or PRUNED, and what each returns to the sweeper."""
    from slurmml.core.states import STOPPED_STATES
    from slurmml.launcher.outcome import stopped_value
    from slurmml.registry.jobs import runs_by_id

    finished = batch.finished_indices(batch_dir)
    missing = [i for i in range(len(run_ids)) if i not in finished]
    if not missing:
        return {}
    registry.ingest(sweep_id)  # a local task's end may not be read yet
    runs = runs_by_id(registry, [run_ids[i] for i in missing])
    value = stopped_value(sweeper_direction(config))
    return {i: value for i in missing if (run := runs.get(run_ids[i])) is not None and run.state in STOPPED_STATES}


def _target(sweep_dir: Path, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> BatchTarget:
    """This command's batch; its sweep id is made (and recorded on disk) by its first batch."""
    return BatchTarget(sweep_id_for(sweep_dir, initial_job_idx), sweep_dir, initial_job_idx,
                       [list(overrides) for overrides in job_overrides])


def _record_outcome(registry: Any, sweep_id: str, lost: dict[str, str]) -> None:
    """After waiting: ingest what the runs recorded; runs that never wrote their end are marked LOST."""
    report = registry.ingest(sweep_id)
    for problem in report.problems:
        print(f"slurmml: {problem}", file=sys.stderr)
    registry.mark_final({rid: ("LOST", reason) for rid, reason in lost.items()}, source="launcher")


SHOW_RESULTS_UP_TO = 20
_tallies: dict[str, tuple[int, int, int]] = {}  # sweep id: batches, completed, failed so far in this command


def batch_summary(sweep_id: str, batch_number: int, first_job: int, completed: int, failed: int,
                  so_far: tuple[int, int]) -> str:
    """The line after a batch. Optimizing sweepers run many batches: say which one, and the sweep's total."""
    last_job = first_job + completed + failed - 1
    jobs = f"#{first_job}" if last_job == first_job else f"#{first_job}-#{last_job}"
    line = f"sweep {sweep_id}, batch {batch_number} ({jobs}): {completed} completed, {failed} failed"
    if batch_number > 1:
        line += f"; sweep so far: {so_far[0]} completed, {so_far[1]} failed"
    return line


def _summarize(sweep_id: str, sweep_dir: Path, initial_job_idx: int, returns: list[Any], logs: dict[int, str]) -> None:
    """One line for the batch, one per failed task with its log: what a person wants after waiting."""
    from hydra.core.utils import JobStatus

    failed = [i for i, r in enumerate(returns) if r.status != JobStatus.COMPLETED]
    batches, completed, failures = _tallies.get(sweep_id, (0, 0, 0))
    _tallies[sweep_id] = (batches + 1, completed + len(returns) - len(failed), failures + len(failed))
    line = batch_summary(sweep_id, batches + 1, initial_job_idx, len(returns) - len(failed), len(failed),
                         _tallies[sweep_id][1:])
    print(f"slurmml: {line}; outputs in {sweep_dir}", file=sys.stderr)
    if len(returns) <= SHOW_RESULTS_UP_TO:
        for index, job_return in enumerate(returns):
            if job_return.status == JobStatus.COMPLETED:
                print(f"  #{initial_job_idx + index} {' '.join(mask_overrides(job_return.overrides or []))} -> {job_return.return_value!r}",
                      file=sys.stderr)
    for index in failed:
        print(f"  #{initial_job_idx + index} {' '.join(mask_overrides(returns[index].overrides or []))}: {returns[index]._return_value!r}"
              f"\n    log: {logs[index]}", file=sys.stderr)


class _progress:
    """A Rich progress bar on stderr while a batch runs; a no-op when stderr is not a terminal."""

    def __init__(self, title: str, total: int) -> None:
        self.title, self.total = title, total
        self._bar: Any = None

    def __enter__(self) -> Any:
        if not sys.stderr.isatty():
            return lambda done, lost: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             transient=False)
        self._bar.start()
        task = self._bar.add_task(self.title, total=self.total)
        return lambda done, lost: self._bar.update(task, completed=done)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
