"""Find a sweep on disk or by id, and tally its runs' states."""

from __future__ import annotations

import json
from pathlib import Path

from slurmml.errors import SlurmmlError
from slurmml.home import slurmml_home
from slurmml.launcher import batch
from slurmml.core.states import ALL_STATES


def resolve_sweep(sweep: str) -> list[Path]:
    """The state directories of a sweep id (recorded under $SLURMML_HOME/sweeps) or of every sweep in a directory."""
    path = Path(sweep).expanduser()
    if (path / ".slurmml").is_dir():
        found = [record.parent for record in (path / ".slurmml").glob(f"*/{batch.SWEEP_RECORD}")]
        if found:
            return sorted(found, key=lambda d: json.loads((d / batch.SWEEP_RECORD).read_text())["created"])
    record = slurmml_home() / "sweeps" / f"{sweep}.json"
    if record.is_file():
        state_dir = batch.sweep_state_dir(Path(json.loads(record.read_text())["dir"]), sweep)
        if state_dir.is_dir():
            return [state_dir]
        raise SlurmmlError(f"sweep {sweep} was in {state_dir.parent.parent}, which no longer holds it")
    raise unknown_sweep(sweep)


def unknown_sweep(sweep: str) -> SlurmmlError:
    """What every command says for a sweep it cannot find."""
    return SlurmmlError(f"no sweep '{sweep}': not a sweep directory, and no sweep with that id in {slurmml_home()}")


def counts(rows: list[dict]) -> dict[str, int]:
    tally: dict[str, int] = {}
    for row in rows:
        tally[row["state"]] = tally.get(row["state"], 0) + 1
    order = {state: number for number, state in enumerate(ALL_STATES)}  # live first, then how runs ended
    return dict(sorted(tally.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def sweep_record(state_dir: Path) -> dict:
    return json.loads((state_dir / batch.SWEEP_RECORD).read_text())
