"""`slurmml sync`: runs from other machines, through the object store, into this registry (the login node); and
`slurmml sync --push`: this machine's local runs out to the store (a workstation that was offline)."""

from __future__ import annotations

import contextlib
import json
from typing import Any, Callable, Iterable, Iterator, Optional

import click

# Further login-node work that `slurmml sync` does after pulling runs: each is called with the registry and the
# store and returns lines to show. This tuple is the one place such a step is added.
def upload_pending_artifacts(registry: Any, store: Any) -> Iterable[str]:
    """Artifacts that jobs could not upload (their node could not reach the store), uploaded from here."""
    from slurmml.registry.artifacts import upload_pending

    done = upload_pending(registry, store)
    if done.uploaded:
        yield f"uploaded {len(done.uploaded)} pending artifact(s) from this machine"
    for problem in done.problems:
        yield f"artifact upload: {problem}"


PULL_STEPS: tuple[Callable[[Any, Any], Iterable[str]], ...] = (upload_pending_artifacts,)


@click.command()
@click.argument("run_ids", nargs=-1, metavar="[RUN_ID]...")
@click.option("--push", is_flag=True, help="Ship this machine's local runs to the store instead of pulling.")
@click.option("--json", "as_json", is_flag=True, help="Print what happened to every run as one JSON object.")
def sync(run_ids: tuple[str, ...], push: bool, as_json: bool) -> None:
    """Bring runs shipped through the object store into the registry (all, or the RUN_IDs).

    A plain `python train.py` on a workstation or a notebook ships its run to the configured store
    (`slurmml storage set`, or SLURMML_STORAGE) while it runs; `slurmml sync` on the login node adds those runs,
    their metrics and the code they ran to the registry, where they can be shown, compared and cloned. Running it
    again adds only what is new; a sync that stopped half-way goes on where it was.

    With --push, on the machine that ran them: ship the local runs that are not fully in the store yet (all of
    those that were started for shipping, or the RUN_IDs), e.g. after working offline.
    """
    from slurmml.home import slurmml_home
    from slurmml.storage.s3 import open_store

    store = open_store()
    home = slurmml_home()
    if push:
        _push(store, home, run_ids, as_json)
    else:
        _pull(store, home, run_ids, as_json)


def _pull(store: Any, home: Any, run_ids: tuple[str, ...], as_json: bool) -> None:
    from slurmml.registry.registry import Registry
    from slurmml.registry.synced import pull, remote_runs

    ids, missing = remote_runs(store, run_ids)  # the store's own error, before the registry is touched
    with Registry() as registry, _progress(not as_json) as progress:
        report = pull(registry, store, ids, home, progress=progress, steps=PULL_STEPS)
    if as_json:
        click.echo(json.dumps({"store": store.config.url, "runs": [r.as_dict() for r in report.runs],
                               "missing": missing, "stopped": report.stopped, "extra": report.extra}, indent=2))
    else:
        for run in report.runs:
            line = _pull_line(run)
            if line:
                click.echo(line, err=run.status == "failed")
        for line in report.extra:
            click.echo(line)
        for run_id in missing:
            click.echo(f"slurmml: run {run_id} is not in {store.config.url}", err=True)
        if report.stopped:
            click.echo(f"slurmml: sync stopped: {report.stopped}; run it again to go on", err=True)
        click.echo(_pull_total(report, store.config.url))
    if report.failed or missing:
        raise SystemExit(1)


def _pull_line(run: Any) -> Optional[str]:
    """One line for a run that changed, waits or was not synced; None for one with nothing new."""
    if run.status in ("new", "updated"):
        source = f" from {run.host}" if run.host else ""
        return (f"{run.run_id}{source}: {'new, ' if run.status == 'new' else ''}{_size(run.new_bytes)} in "
                f"{run.chunks} chunk(s), {run.points} point(s), {run.state or '?'}"
                + (f"; {run.note}" if run.note else ""))
    if run.status == "failed":
        return f"slurmml: {run.note}"
    if run.status in ("waiting", "skipped"):
        return f"{run.run_id}: {run.status}: {run.note}"
    if run.note:  # up to date, but waiting for a chunk after a gap
        return f"{run.run_id}: {run.note}"
    return None


def _pull_total(report: Any, url: str) -> str:
    counts: dict[str, int] = {}
    for run in report.runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    parts = [f"{counts[s]} {s}" for s in ("new", "updated", "up to date", "waiting", "skipped", "failed", "not reached")
             if counts.get(s)]
    if counts.get("here"):
        parts.append(f"{counts['here']} ran here")
    return f"{len(report.runs)} run(s) in {url}" + (f": {', '.join(parts)}" if parts else "")


def _push(store: Any, home: Any, run_ids: tuple[str, ...], as_json: bool) -> None:
    from slurmml.tracking.shipper import push_runs

    store.check()  # one line for bad credentials, no bucket or no answer, even with nothing to ship
    outcomes = push_runs(store, home / "runs", run_ids)
    rows = []
    for outcome in outcomes:
        result = outcome.result
        rows.append({"run_id": outcome.run_id, "skipped": outcome.skipped, "problem": outcome.problem,
                     "bytes": result.bytes if result else 0, "chunks": result.chunks if result else 0,
                     "run_json": bool(result and result.meta), "offset": result.offset if result else None})
        if as_json:
            continue
        if outcome.problem:
            click.echo(f"slurmml: {outcome.problem}", err=True)
        elif result is not None and (result.bytes or result.meta):
            click.echo(f"{outcome.run_id}: shipped {_size(result.bytes)} in {result.chunks} chunk(s)"
                       + (" and its run.json" if result.meta else ""))
        elif result is not None:
            click.echo(f"{outcome.run_id}: up to date")
    shipped = sum(1 for row in rows if row["bytes"] or row["run_json"])
    if as_json:
        click.echo(json.dumps({"store": store.config.url, "runs": rows}, indent=2))
    else:
        click.echo(f"shipped {shipped} run(s) to {store.config.url}"
                   + (f" ({len(outcomes) - shipped} up to date or running)" if len(outcomes) > shipped else ""))
    if any(row["problem"] for row in rows):
        raise SystemExit(1)


@contextlib.contextmanager
def _progress(wanted: bool) -> Iterator[Any]:
    """A Rich progress bar of the bytes to download, on a terminal's stderr only; None elsewhere."""
    import sys

    if not (wanted and sys.stderr.isatty()):
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from slurmml.cli.terminal import console

    with Progress(TextColumn("sync"), BarColumn(), DownloadColumn(), console=console(stderr=True),
                  transient=True) as bar:
        task = bar.add_task("sync", total=None)

        class Bytes:
            def planned(self, nbytes: int) -> None:
                total = bar.tasks[0].total or 0
                bar.update(task, total=total + nbytes)

            def done(self, nbytes: int) -> None:
                bar.advance(task, nbytes)

        yield Bytes()


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:.3g} GB"
