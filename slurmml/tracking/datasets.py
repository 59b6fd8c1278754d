"""`slurmml.dataset("name@v2")`: a dataset version as a local folder, recorded as an input of the current run.

The version is materialized once per cache (slurmml.storage.data_cache: node-local or shared, staged by the
launcher or downloaded on first use), and the run's spool gets an `input` record with the exact version and
digest, so lineage knows what the run read. Importing this module costs nothing: the store, boto3 and Rich are
imported only when a call needs them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

__all__ = ["dataset"]


def dataset(spec: str, node_local: Optional[bool] = None) -> Path:
    """The local folder of the dataset version `spec` names (NAME, NAME@v3, NAME@latest, NAME@ALIAS), or the
    file itself for a dataset added from one file. Downloads it only when no cache holds it (one stderr line
    then). node_local: True to use the node's local disk ($SLURM_TMPDIR), False the shared cache, None as
    SLURMML_DATA_NODE_LOCAL says. Inside a job an alias means the version staged for the sweep."""
    from slurmml.storage.data_cache import note, open_version
    from slurmml.tracking.client import current_writer

    started = time.monotonic()
    opened = open_version(spec, node_local=node_local, progress=True)
    if opened.fetched:
        print(note(opened, time.monotonic() - started), file=sys.stderr)
    current_writer().write({"k": "input", "t": time.time(), "dataset": opened.name, "version": opened.version,
                            "digest": opened.digest, "fetched": opened.fetched})
    return opened.path
