"""A plain script's run shipped to the object store while it runs, so `slurmml sync` elsewhere can ingest it.

When a store is configured (slurmml.storage.config) and SLURMML_SHIP_RUNS is not 0, a local run's first
`slurmml.log` starts a daemon thread that records the run's code and git state (run.json, a code snapshot) and
then ships the spool's new whole lines every INTERVAL_S; at exit, after the end record, it ships the rest once
more within EXIT_BUDGET_S. Shipping never fails or holds up the script: a store that refuses or does not answer
is noted in one line on stderr (once per run: at exit, or while it runs if it has run for QUIET_S), and `slurmml sync --push` ships what is left from the same files later
(slurmml.storage.shipping keeps the state next to the spool; every upload is a conditional put, so a retry or
two shippers at once store nothing twice).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from slurmml.errors import SlurmmlError
from slurmml.tracking.notices import Notices

SHIP_ENV = "SLURMML_SHIP_RUNS"
INTERVAL_S = 15.0
EXIT_BUDGET_S = 10.0  # at most this long added to the script's exit
QUIET_S = 60.0  # a store failing in a run younger than this is told once, at exit (a short script: one line)


def shipping_enabled(environ: Any = os.environ) -> bool:
    return str(environ.get(SHIP_ENV, "1")).strip().lower() not in ("0", "false", "no", "off")


class Shipper:
    """One local run's shipping: a background thread while it runs, and `finish()` at exit."""

    def __init__(self, store: Any, run_id: str, run_dir: Path, start: dict[str, Any],
                 interval_s: float = INTERVAL_S, exit_budget_s: float = EXIT_BUDGET_S) -> None:
        self.store, self.run_id, self.run_dir = store, run_id, Path(run_dir)
        self.start_info = start  # argv, cwd, script, host, created: what run.json records
        self.interval_s, self.exit_budget_s = interval_s, exit_budget_s
        self._lock = threading.Lock()  # one ship at a time: the thread's, or the exit's
        self._stop = threading.Event()
        self._pid = os.getpid()
        self._prepared = False
        self._problem: Optional[str] = None
        self._stopped: Optional[str] = None  # a conflict: nothing more is shipped
        self._notices = Notices()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="slurmml-ship", daemon=True)

    def start(self) -> "Shipper":
        from slurmml.storage.shipping import write_state

        write_state(self.run_dir, {"offset": 0, "meta": False})  # marks the run as one to ship (sync --push)
        self._thread.start()
        return self

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            try:
                with self._lock:
                    self._ship(None)
            except Exception as error:  # a bug here must not end the thread's retries, nor reach the script
                self._problem = f"{type(error).__name__}: {error}"
            if self._stop.wait(self.interval_s):
                return

    def _ship(self, deadline: Optional[float]) -> bool:
        """Prepare run.json once, then ship what is new; True when nothing is left (called under the lock)."""
        from slurmml.storage.shipping import ShipConflict, ship_run

        if self._stopped:
            return False
        if not self._prepared:
            self._prepare()
        try:
            result = ship_run(self.store, self.run_dir, self.run_id, deadline=deadline)
        except ShipConflict as error:
            self._stopped = str(error)
            self._note(str(error))
            return False
        except SlurmmlError as error:
            self._problem = str(error)
            if deadline is None and time.monotonic() - self._started > QUIET_S:  # a long run hears of it early
                self._note(f"cannot ship run {self.run_id} to {self.store.config.url} ({error}); retrying every "
                           f"{self.interval_s:g} s, and `slurmml sync --push` ships what is left")
            return False
        self._problem = None
        return not result.pending

    def _prepare(self) -> None:
        from slurmml.storage.shipping import base_meta, prepare_run, write_local_meta

        info = self.start_info
        try:
            prepare_run(self.run_dir, self.run_id, argv=info["argv"], cwd=info["cwd"], script=info.get("script"),
                        created=info["created"], host=info["host"])
        except Exception as error:  # git or the filesystem misbehaving: ship the run without its code
            meta = base_meta(self.run_id, argv=info["argv"], cwd=info["cwd"], created=info["created"],
                             host=info["host"])
            meta["code"] = {"digest": None, "note": f"no code snapshot ({type(error).__name__}: {error})"}
            write_local_meta(self.run_dir, meta)
        self._prepared = True

    def _note(self, message: str) -> None:
        """One line on stderr, the first time only: a store that is down must not flood the script's output."""
        self._notices.say("shipping", message)

    # ------------------------------------------------------------ at exit

    def finish(self) -> bool:
        """Stop the thread and ship the rest within the exit budget; one line on stderr if some is left."""
        if os.getpid() != self._pid:  # a forked child exiting: the run is its parent's
            return False
        self._stop.set()
        deadline = time.monotonic() + self.exit_budget_s
        outcome: list[bool] = []

        def last() -> None:
            if self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                try:
                    outcome.append(self._ship(deadline))
                except Exception as error:
                    self._problem = f"{type(error).__name__}: {error}"
                finally:
                    self._lock.release()

        worker = threading.Thread(target=last, name="slurmml-ship-exit", daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()) + 0.5)
        if outcome == [True]:
            return True
        from slurmml.storage.shipping import unshipped_bytes

        why = self._stopped or self._problem or f"no answer within {self.exit_budget_s:g} s"
        self._note(f"run {self.run_id}: {unshipped_bytes(self.run_dir)} bytes not shipped to {self.store.config.url} "
                   f"({why}); `slurmml sync --push` ships them later")
        return False


def start_shipping(run_id: str, run_dir: Path, *, argv: list[str], cwd: str, script: Optional[str], host: str,
                   created: float) -> Optional[Shipper]:
    """Ship this local run if a store is configured and SLURMML_SHIP_RUNS allows it; its `finish` runs at exit.

    Call it before the end record's exit handler is registered: atexit runs last-registered first, so the end
    record is written before the last ship."""
    if not shipping_enabled():
        return None
    from slurmml.storage.config import load_storage
    from slurmml.storage.s3 import ObjectStore

    try:
        config = load_storage(required=False)
    except SlurmmlError as error:
        print(f"slurmml: not shipping run {run_id}: {error}", file=sys.stderr)
        return None
    if config is None:
        return None
    import atexit
    # Imported now, not in the thread: the last ship runs at exit, and once the interpreter is shutting down
    # this module can no longer be imported (it registers an exit hook of its own); boto3 and the blob upload
    # import it.
    import concurrent.futures.thread  # noqa: F401

    shipper = Shipper(ObjectStore(config), run_id, run_dir,
                      {"argv": argv, "cwd": cwd, "script": script, "host": host, "created": created})
    try:
        shipper.start()
    except OSError as error:
        print(f"slurmml: not shipping run {run_id}: {error}", file=sys.stderr)
        return None
    atexit.register(shipper.finish)
    return shipper


# ---------------------------------------------------------------- `slurmml sync --push`


@dataclass
class PushOutcome:
    run_id: str
    result: Any = None            # slurmml.storage.shipping.ShipResult
    problem: Optional[str] = None
    skipped: Optional[str] = None


def push_runs(store: Any, runs_dir: Path, run_ids: Iterable[str] = ()) -> list[PushOutcome]:
    """Ship local runs that have unshipped bytes: the named ones, or every run started for shipping whose
    process has ended (a running one ships itself). A store that fails stops the push at that run (its problem)."""
    from slurmml.storage.s3 import StorageError
    from slurmml.storage.shipping import SHIPPED_FILE, read_state, ship_run, unshipped_bytes, valid_run_id

    named = list(run_ids)
    outcomes = []
    if named:
        folders = [runs_dir / run_id for run_id in named]
    else:
        folders = sorted(d for d in runs_dir.iterdir() if (d / SHIPPED_FILE).is_file()) if runs_dir.is_dir() else []
    for folder in folders:
        outcome = PushOutcome(folder.name)
        outcomes.append(outcome)
        if not valid_run_id(folder.name) or not (folder / "spool.jsonl").is_file():
            outcome.problem = f"no local run {folder.name} in {runs_dir}"
            continue
        start = _start_record(folder / "spool.jsonl")
        if not named:
            if read_state(folder).get("meta") and not unshipped_bytes(folder):
                outcome.skipped = "up to date"
                continue
            if _alive(start):
                outcome.skipped = "still running: its own process ships it"
                continue
        try:
            outcome.result = ship_run(store, folder, folder.name, fallback_meta=lambda: _meta_from_start(folder, start))
        except StorageError as error:  # the store is down or refuses: the later runs would fail the same way
            outcome.problem = str(error)
            break
        except SlurmmlError as error:  # ShipConflict: this run's spool was rewritten
            outcome.problem = str(error)
    return outcomes


def _meta_from_start(folder: Path, start: dict[str, Any]) -> dict[str, Any]:
    """run.json for a run that did not record one while it ran: what its start record says, and no code."""
    from slurmml.storage.shipping import base_meta

    meta = base_meta(folder.name, argv=start.get("argv") or [], cwd=start.get("cwd") or "",
                     created=start.get("t"), host=start.get("host"))
    meta["code"] = {"digest": None, "note": "shipped after the run by `slurmml sync --push`: no code snapshot "
                                            "was taken while it ran"}
    return meta


def _start_record(spool: Path) -> dict[str, Any]:
    import json

    try:
        with open(spool, "rb") as handle:
            record = json.loads(handle.readline() or b"{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and record.get("k") == "start" else {}


def _alive(start: dict[str, Any]) -> bool:
    """The run's process is still running on this machine."""
    pid = start.get("pid")
    try:
        if type(pid) is not int or start.get("host") != os.uname().nodename:
            return False
    except AttributeError:  # not POSIX
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
