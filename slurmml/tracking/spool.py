"""The spool format: one JSON object per line, appended by exactly one process per file.

Records (`k` is the kind, `t` the Unix time it was made):
  {"k": "start", "t": .., "run_id": .., "host": .., "pid": .., "run_dir": .., "config": {..}, "overrides": [..],
   "environment": {"python": .., "packages": {..}, "slurm": {..}}}
  {"k": "m", "t": .., "s": step or null, "v": {"loss": 0.12, "acc": 0.9}}       metrics
  {"k": "p", "t": .., "v": {"lr": 0.001}}                                      params
  {"k": "a", "t": .., "name": .., "path": .., "size": .., "digest": .., "upload": "pending" | null}   artifact
  {"k": "upload", "t": .., "path": .., "logged": <its a record's t>, "digest": .., "uri": "s3://..",
   "upload": "uploaded" | "pending" | "failed: .."}
  {"k": "config", "t": .., "config": {..}}       the resolved config, when only known after the start (script runs)
  {"k": "input", "t": .., "dataset": .., "version": 2, "digest": "sha256:..", "fetched": true}  a dataset used
  {"k": "gpu", "t": .., "gpu": 0, "uuid": .., "util": .., "mem_used": .., "mem_total": .., "power": .., "temp": ..}
  {"k": "end", "t": .., "state": "COMPLETED" | "FAILED", "exit_code": 0, "error": ".."}

A reader consumes whole lines only: a last line without its newline is a write still in
progress (or torn by a kill) and waits for the rest; a complete line that is not a JSON
object is reported and skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SPOOL_ENV = "SLURMML_SPOOL"
RUN_ID_ENV = "SLURMML_RUN_ID"


def encode(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":"), default=str, allow_nan=True) + "\n").encode()


@dataclass
class Chunk:
    records: list[dict[str, Any]] = field(default_factory=list)
    consumed: int = 0  # bytes of the input that are done with (parsed or skipped)
    problems: list[tuple[int, str]] = field(default_factory=list)  # (offset within the input, what is wrong)


def parse_chunk(data: bytes) -> Chunk:
    """Parse the complete lines of `data` (bytes read from some offset of a spool)."""
    end = data.rfind(b"\n") + 1
    if end:  # fast path: all lines at once as one JSON array; any doubt falls back to line by line
        body = data[: end - 1]
        try:
            records = json.loads(b"[" + body.replace(b"\n", b",") + b"]")
        except ValueError:
            records = None
        if (records is not None and len(records) == body.count(b"\n") + 1
                and all(type(r) is dict and "k" in r for r in records)):
            return Chunk(records=records, consumed=end)
    chunk = Chunk()
    position = 0
    loads = json.loads
    for line in data[:end].split(b"\n")[:-1]:
        if line.strip():
            try:
                record = loads(line)
            except ValueError as error:
                chunk.problems.append((position, f"not JSON ({error.msg})"))
            else:
                if isinstance(record, dict) and "k" in record:
                    chunk.records.append(record)
                else:
                    chunk.problems.append((position, "not a spool record"))
        position += len(line) + 1
    chunk.consumed = end
    return chunk
