"""Training frameworks under slurmml: `slurmml.integrations.lightning`, `slurmml.integrations.huggingface`.

Each module imports its framework at its top and is imported only by users who installed the extra
(`pip install "slurmml[lightning]"`, `"slurmml[huggingface]"`); this package itself imports neither, so
`import slurmml.integrations` stays as cheap as `import slurmml`. docs/integrations.md says how to use them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional

from slurmml.tracking import client
from slurmml.tracking.spool import RUN_ID_ENV


def numbers_only(values: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The numeric entries of a framework's log dict, for `slurmml.log`. Frameworks mix strings and None into
    what they log; those are dropped quietly, as is a "step" entry (it is the step, and would clash with
    log's own argument). numpy and torch scalars become floats; a tensor of several values is dropped."""
    kept: dict[str, Any] = {}
    for name, value in (values or {}).items():
        name = str(name)
        if name == "step" or value is None or isinstance(value, (str, bytes, bytearray)):
            continue
        if isinstance(value, (int, float)):
            kept[name] = value
            continue
        try:
            kept[name] = float(value)
        except (TypeError, ValueError, RuntimeError):
            continue
    return kept


def run_folder() -> Optional[Path]:
    """The run's folder; None on a rank other than 0 that belongs to no slurmml job, where asking would start
    a stray local run of its own (in a slurmml job every rank knows its run through the environment)."""
    if client.rank() == 0 or os.environ.get(RUN_ID_ENV):
        return Path(client.run.dir)
    return None


def missing_framework(error: ModuleNotFoundError, package: str, module: str, extra: str) -> ImportError:
    """The one-line ImportError for a framework that is not installed; `error` again if something else is
    missing (a broken install must show its own cause)."""
    if (error.name or "").split(".")[0] != package:
        return error
    return ImportError(f"{module} needs {package}, which is not installed: pip install \"slurmml[{extra}]\"")
