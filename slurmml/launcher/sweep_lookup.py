"""Find the sweeps a command names (a sweep id, or the folder sweeps were launched into), and tally their runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slurmml.core.states import ALL_STATES
from slurmml.errors import SlurmmlError
from slurmml.home import slurmml_home


def sweep_ids(registry: Any, sweep: str) -> list[str]:
    """The sweeps SWEEP names: a sweep id known to the registry, or every sweep launched into that folder
    (oldest first). Every command that takes a sweep looks it up here."""
    from slurmml.registry.sweep_reads import sweeps_launched_into

    if registry.has_sweep(sweep):
        return [sweep]
    path = Path(sweep).expanduser()
    if path.is_dir():
        found = sweeps_launched_into(registry.conn, {str(path.absolute()), str(path.resolve())})
        if found:
            return found
    raise unknown_sweep(sweep)


def one_sweep_id(registry: Any, sweep: str) -> str:
    """The sweep SWEEP names, for options that show one sweep (`--sweep`): a folder must hold only one."""
    ids = sweep_ids(registry, sweep)
    if len(ids) > 1:
        raise SlurmmlError(f"{sweep} holds {len(ids)} sweeps ({', '.join(ids)}): give one of their ids")
    return ids[0]


def unknown_sweep(sweep: str) -> SlurmmlError:
    """What every command says for a sweep it cannot find."""
    return SlurmmlError(f"no sweep '{sweep}': not a sweep directory, and no sweep with that id in {slurmml_home()}")


def counts(rows: list[dict]) -> dict[str, int]:
    """state -> how many of the rows are in it, live states first, then how runs ended."""
    tally: dict[str, int] = {}
    for row in rows:
        tally[row["state"]] = tally.get(row["state"], 0) + 1
    order = {state: number for number, state in enumerate(ALL_STATES)}
    return dict(sorted(tally.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))
