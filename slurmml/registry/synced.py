"""Runs from other machines, pulled from the object store into the registry (`slurmml sync` on the login node).

Each shipped run (slurmml.storage.shipping) gets a local mirror of its spool, $SLURMML_HOME/synced/<run id>/
spool.jsonl, that only this module appends to, chunk by chunk in offset order, each checked against its sha256
first. The run is registered like a plain script's run (no sweep) with the mirror as its spool, its run.json goes
into synced_runs, and the ordinary ingest reads the mirror from its own byte offset. So a sync that stops half-way
(killed, or the endpoint down) and runs again gives the same registry: a mirror whose size is not the last chunk
boundary it recorded is cut back to a boundary and the same bytes are appended again, and the ingest never reads
a line twice. A chunk that is not the next one (a gap) waits; a corrupt one stops that run, in one line.

A synced run's process is on another machine, so nothing here can see it die: it stays RUNNING while new bytes
keep arriving, becomes LOST after LOST_AFTER_S without any, and is RUNNING again if more come (its own end
record, when it arrives, decides how it ended). end_dead_local_runs leaves synced runs alone.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol

from slurmml.core.states import FINAL_STATES
from slurmml.errors import SlurmmlError
from slurmml.registry.launch_writes import end_runs
from slurmml.registry.store import transaction
from slurmml.storage import shipping
from slurmml.storage.s3 import ObjectStore, StorageError

SYNCED_DIR = "synced"
MIRROR_FILE = "spool.jsonl"
MIRROR_STATE = "spool.synced"  # the mirror's last whole chunk boundary: bytes past it are an interrupted append
LOST_AFTER_S = 6 * 3600.0
LOST_SOURCE = "sync"


class Progress(Protocol):
    def planned(self, nbytes: int) -> None: ...

    def done(self, nbytes: int) -> None: ...


@dataclass
class RunSync:
    run_id: str
    status: str = "up to date"   # new, updated, up to date, waiting, here, skipped, failed, not reached
    host: Optional[str] = None
    chunks: int = 0
    new_bytes: int = 0
    points: int = 0
    state: Optional[str] = None
    note: Optional[str] = None   # one line: why it waits, was skipped or failed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SyncReport:
    runs: list[RunSync] = field(default_factory=list)
    stopped: Optional[str] = None   # why the pull stopped before the end (the store failed half-way)
    extra: list[str] = field(default_factory=list)  # what the extra steps said

    @property
    def failed(self) -> bool:
        return self.stopped is not None or any(r.status == "failed" for r in self.runs)


def mirror_folder(home: Path, run_id: str) -> Path:
    return home / SYNCED_DIR / run_id


def remote_runs(store: ObjectStore, run_ids: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """The store's shipped runs (those of `run_ids` only, when given) and the named ones it does not have.
    Raises the store's one-line error before anything is written (bad credentials, no bucket, no answer)."""
    found = shipping.list_run_ids(store)
    named = list(run_ids)
    if not named:
        return found, []
    there = set(found)
    return [r for r in named if r in there], [r for r in named if r not in there]


def pull(registry: Any, store: ObjectStore, run_ids: Iterable[str], home: Path, *,
         progress: Optional[Progress] = None, max_chunks: Optional[int] = None,
         lost_after_s: float = LOST_AFTER_S,
         steps: Iterable[Callable[[Any, ObjectStore], Iterable[str]]] = ()) -> SyncReport:
    """Bring the named shipped runs into the registry (see the module's docstring); then run `steps` (further
    login-node work that sync does, each given the registry and the store, each returning lines to show).
    `max_chunks` stops after that many chunks (an interrupted sync, for tests)."""
    report = SyncReport()
    conn = registry.conn
    registry.adopt_local_runs(home / "runs")  # this machine's own runs are registered with their own spools
    budget = _Budget(max_chunks)
    for run_id in run_ids:
        outcome = RunSync(run_id)
        report.runs.append(outcome)
        if report.stopped:
            outcome.status, outcome.note = "not reached", report.stopped
            continue
        try:
            _pull_run(registry, store, run_id, home, outcome, progress, budget, lost_after_s)
        except StorageError as error:  # the endpoint went away half-way: what is done stays, the rest waits
            report.stopped = str(error)
            outcome.status, outcome.note = "failed", str(error)
        except SlurmmlError as error:  # a run.json that is not one
            outcome.status, outcome.note = "failed", str(error)
        if budget.cut and not report.stopped:
            report.stopped = f"stopped after {max_chunks} chunk(s)"
        row = conn.execute("SELECT state, host FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is not None and outcome.status not in ("here", "skipped"):
            outcome.state, outcome.host = row[0], row[1]
    if not report.stopped:
        for step in steps:
            report.extra.extend(step(registry, store))
    return report


def _pull_run(registry: Any, store: ObjectStore, run_id: str, home: Path, outcome: RunSync,
              progress: Optional[Progress], budget: "_Budget", lost_after_s: float) -> None:
    conn = registry.conn
    folder = mirror_folder(home, run_id)
    mirror = folder / MIRROR_FILE
    row = conn.execute("SELECT spool_path FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is not None and row[0] != str(mirror):
        if (home / "runs" / run_id).is_dir():
            outcome.status, outcome.note = "here", "ran on this machine: registered from its own spool"
        else:
            outcome.status = "skipped"
            outcome.note = f"a run with this id is already in the registry (spool {row[0]}); not synced"
        return
    synced = conn.execute("SELECT store, meta FROM synced_runs WHERE run_id = ?", (run_id,)).fetchone()
    if synced is not None and synced[0] != store.config.url:
        outcome.status, outcome.note = "skipped", f"synced from {synced[0]}, not from {store.config.url}"
        return
    meta = json.loads(synced[1]) if synced is not None else shipping.read_meta(store, run_id)
    if meta is None:
        outcome.status, outcome.note = "waiting", "no run.json in the store yet"
        return
    outcome.host = meta.get("host")
    failure: Optional[StorageError] = None
    with _locked(folder):
        committed = _repair(store, run_id, mirror)
        if synced is None:
            _register(conn, run_id, mirror, meta, store)
            outcome.status = "new"
        chunks = list(shipping.list_chunks(store, run_id, committed))
        if progress is not None:
            progress.planned(sum(c.size for c in chunks))
        for chunk in chunks:
            if chunk.offset != committed:  # a chunk still being written (or lost): the rest waits for it
                outcome.note = f"waiting for the bytes from {committed} (the next chunk in the store is at {chunk.offset})"
                break
            if not budget.take():
                break
            try:
                body = shipping.read_chunk(store, run_id, chunk)
            except shipping.CorruptChunk as error:
                outcome.status, outcome.note = "failed", f"{error}; its later chunks are not synced"
                break
            except StorageError as error:  # what came before it is ingested all the same
                failure = error
                break
            committed = _append(mirror, committed, body)
            outcome.chunks += 1
            outcome.new_bytes += len(body)
            if progress is not None:
                progress.done(len(body))
    now = time.time()
    if outcome.new_bytes:
        if outcome.status == "up to date":
            outcome.status = "updated"
        _revive(conn, run_id, now)
        with transaction(conn):
            conn.execute("UPDATE synced_runs SET updated = ? WHERE run_id = ?", (now, run_id))
    outcome.points = _ingest(registry, run_id)
    if failure is not None:
        raise failure
    if not outcome.new_bytes and outcome.status != "failed":
        _maybe_lost(conn, run_id, now, lost_after_s)


class _Budget:
    """At most `left` chunks in one pull (None: no limit); `cut` once one was left for later."""

    def __init__(self, left: Optional[int]) -> None:
        self.left, self.cut = left, False

    def take(self) -> bool:
        if self.left is None:
            return True
        if self.left <= 0:
            self.cut = True
            return False
        self.left -= 1
        return True


# ---------------------------------------------------------------- the mirror


def _repair(store: ObjectStore, run_id: str, mirror: Path) -> int:
    """The mirror's committed size, after cutting back what an interrupted append left past it."""
    try:
        size = mirror.stat().st_size
    except FileNotFoundError:
        size = 0
    state = _read_committed(mirror)
    if state is not None and state == size:
        return size
    if state is not None and state < size:
        boundary = state
    else:  # no record, or the mirror is shorter than recorded: the last chunk boundary within it
        boundary = 0
        for chunk in shipping.list_chunks(store, run_id):
            if chunk.end > size or chunk.offset != boundary:
                break
            boundary = chunk.end
    if size != boundary:
        with open(mirror, "r+b") as handle:
            handle.truncate(boundary)
            os.fsync(handle.fileno())
    _write_committed(mirror, boundary)
    return boundary


def _append(mirror: Path, committed: int, body: bytes) -> int:
    """Write `body` at `committed` (cutting anything past it first), make it durable, then record the new
    boundary: a crash between the two leaves bytes past the record, which the next sync cuts back."""
    mirror.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(mirror, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, committed)
        os.lseek(fd, committed, os.SEEK_SET)
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    _write_committed(mirror, committed + len(body))
    return committed + len(body)


def _read_committed(mirror: Path) -> Optional[int]:
    try:
        value = json.loads((mirror.parent / MIRROR_STATE).read_text()).get("offset")
    except (OSError, ValueError, AttributeError):
        return None
    return value if type(value) is int and value >= 0 else None


def _write_committed(mirror: Path, offset: int) -> None:
    path = mirror.parent / MIRROR_STATE
    temporary = path.with_name(path.name + ".tmp")
    mirror.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps({"offset": offset}))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One sync at a time appends to a run's mirror (two at once would append a chunk twice)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(folder / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the registry


def _register(conn: Any, run_id: str, mirror: Path, meta: dict[str, Any], store: ObjectStore) -> None:
    created = meta.get("created") if isinstance(meta.get("created"), (int, float)) else time.time()
    with transaction(conn):
        conn.execute("INSERT OR IGNORE INTO runs(id, overrides, spool_path, run_dir, state, created) "
                     "VALUES (?, '[]', ?, ?, 'RUNNING', ?)", (run_id, str(mirror), str(mirror.parent), created))
        conn.execute("INSERT OR IGNORE INTO synced_runs(run_id, store, mirror, meta, updated) VALUES (?, ?, ?, ?, ?)",
                     (run_id, store.config.url, str(mirror), json.dumps(meta), time.time()))


def _ingest(registry: Any, run_id: str) -> int:
    """Ingest the mirror up to its end (the ingest reads a bounded amount per pass); the points added."""
    points = 0
    for _ in range(10_000):
        report = registry.ingest_one(run_id)
        points += report.points
        if not report.records and not report.problems:
            break
    return points


def _revive(conn: Any, run_id: str, now: float) -> None:
    """New bytes for a run this module had called LOST: it is running after all (its end record may follow)."""
    with transaction(conn):
        run = conn.execute("SELECT run FROM runs WHERE id = ? AND state = 'LOST' AND (SELECT source FROM run_states s "
                           "WHERE s.run = runs.run ORDER BY rowid DESC LIMIT 1) = ?", (run_id, LOST_SOURCE)).fetchone()
        if run is not None:
            conn.execute("UPDATE runs SET state = 'RUNNING', ended = NULL, error = NULL WHERE run = ?", (run[0],))
            conn.execute("INSERT INTO run_states(run, state, time, source) VALUES (?, 'RUNNING', ?, ?)",
                         (run[0], now, LOST_SOURCE))


def _maybe_lost(conn: Any, run_id: str, now: float, lost_after_s: float) -> None:
    row = conn.execute("SELECT r.state, y.updated, r.host FROM runs r JOIN synced_runs y ON y.run_id = r.id "
                       "WHERE r.id = ?", (run_id,)).fetchone()
    if row is None or row[0] in FINAL_STATES or row[1] is None or now - row[1] < lost_after_s:
        return
    hours = (now - row[1]) / 3600
    end_runs(conn, {run_id: ("LOST", f"no new records from {row[2] or 'its machine'} through the object store for "
                                     f"{hours:.1f} h (the machine is offline or the process ended without its end); "
                                     f"more records bring it back")}, source=LOST_SOURCE)


def synced_run_ids(conn: Any) -> list[str]:
    return [row[0] for row in conn.execute("SELECT run_id FROM synced_runs ORDER BY run_id")]
