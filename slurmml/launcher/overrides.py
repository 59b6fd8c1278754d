"""A clone's overrides, pure: merging changes into the parent's, bare dataset versions, launcher fields; and what a
clone is once queued."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional

from slurmml.errors import SlurmmlError


@dataclasses.dataclass(frozen=True)
class Cloned:
    run_id: str
    overrides: list[str]
    job_id: Optional[str] = None  # Slurm backend
    pid: Optional[int] = None  # local backend
    log_path: Optional[str] = None

    @property
    def where(self) -> str:
        return f"job {self.job_id}" if self.job_id else f"local process {self.pid}"


_OVERRIDE = re.compile(r"^(~|\+\+|\+)?([^=]*)")


def split_override(override: str) -> tuple[str, str]:
    """`++db.lr=1` -> ('++', 'db.lr'); `~seed` -> ('~', 'seed'); `model=mlp` -> ('', 'model')."""
    match = _OVERRIDE.match(override.strip())
    assert match is not None  # the pattern matches any string
    return match.group(1) or "", match.group(2).strip()


def merge_overrides(parent: list[str], changes: list[str]) -> list[str]:
    """The parent's overrides with `changes` applied, in the parent's order; new keys are appended.

    - `key=value` replaces the parent's override of `key`, keeping its `+`/`++` (the key is not in the
      primary config, so a plain `key=` would not compose); a change's own prefix wins.
    - `~key` drops the parent's override of `key`; it is kept as `~key` (delete from the config) unless
      the parent had added the key itself (`+key=`), which dropping already undoes.
    """
    merged = list(parent)
    for change in changes:
        prefix, key = split_override(change)
        mine = [index for index, override in enumerate(merged) if split_override(override)[1] == key]
        if prefix == "~":
            added_by_parent = any(split_override(merged[index])[0] == "+" for index in mine)
            merged = [override for index, override in enumerate(merged) if index not in mine]
            if not added_by_parent:
                merged.append(change)
            continue
        if not mine:
            merged.append(change)
            continue
        kept = split_override(merged[mine[0]])[0]
        if not prefix and kept in ("+", "++"):
            change = kept + change
        merged[mine[0]] = change
        merged = [override for index, override in enumerate(merged) if index not in mine[1:]]
    return merged


def unmask_overrides(overrides: list[str], parent: list[str]) -> list[str]:
    """Overrides read back from the registry carry "***" for secret values (`+api_key=***`): put back the
    parent's real value of that key, from its staged payload. A masked override the parent has no value
    for is refused rather than run with "***"."""
    from slurmml.tracking.secrets import MASK, mask_override

    real = {split_override(p)[1]: p for p in parent}
    unmasked = []
    for override in overrides:
        masked = MASK in override and mask_override(override.replace(MASK, "x")) == override
        if masked:
            name, key = override.partition("=")[0], split_override(override)[1]
            source = real.get(key)
            if source is None or mask_override(source).partition("=")[2] != override.partition("=")[2]:
                raise SlurmmlError(f"{override}: {MASK} stands for a masked secret, and the run has no {key} "
                                   f"override it could stand for; give the value itself")
            override = f"{name}={source.partition('=')[2]}"
        unmasked.append(override)
    return unmasked


_DATASET_TOKEN = re.compile(r"^[A-Za-z0-9][\w.\-]*@[\w.\-]+$")


def override_values(overrides: list[str]) -> dict[str, str]:
    """`key=value` overrides as {key: value} (prefixes `+`/`++` dropped; `~key` and flags left out)."""
    values = {}
    for override in overrides:
        if "=" in override:
            key, _, value = override.partition("=")
            values[key.lstrip("+").strip()] = value
    return values


def dataset_changes(changes: list[str], values: dict[str, Any]) -> list[str]:
    """Bare `NAME@VERSION` changes (`digits@v3`) as overrides of every config key whose value names that dataset
    (`data.dataset=digits@v3`); `values` is the parent's flattened config and overrides. Other changes stay."""
    out = []
    for change in changes:
        if "=" in change or not _DATASET_TOKEN.match(change):
            out.append(change)
            continue
        name = change.split("@", 1)[0]
        keys = sorted(key for key, value in values.items()
                      if isinstance(value, str) and (value == name or value.startswith(name + "@")))
        if not keys:
            raise SlurmmlError(f"{change}: no value of the run's config names dataset {name!r}; "
                               f"say which key takes it (KEY={change})")
        out.extend(f"{key}={change}" for key in keys)
    return out


def launcher_overrides(overrides: list[str]) -> list[str]:
    """Overrides of the launcher: a clone is submitted with its sweep's recorded launcher settings."""
    return [o for o in overrides if re.match(r"^(hydra\.launcher\b|hydra/launcher\b)", split_override(o)[1])]
