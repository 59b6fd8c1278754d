"""Problems a job notes on its stderr, each kind once: a full disk, a store that is down or a record that cannot
be encoded must not flood the job's log, and noting them must never fail the job."""

from __future__ import annotations

import sys


class Notices:
    """`say(kind, message)` prints `slurmml: message` the first time a kind comes up, then stays quiet about it."""

    def __init__(self) -> None:
        self._said: set[str] = set()

    def say(self, kind: str, message: str) -> None:
        if kind in self._said:
            return
        self._said.add(kind)
        try:
            print(f"slurmml: {message}", file=sys.stderr, flush=True)
        except Exception:  # stderr closed or broken: nothing more can be done
            pass
