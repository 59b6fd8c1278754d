"""Nested run configs as flat dotted keys (`{"optim": {"lr": 0.1}}` -> `optim.lr`): how the registry stores
a config's values one per row and how a checkpoint's config is compared with the current one."""

from __future__ import annotations

from typing import Any, Iterator, Mapping


def flatten(values: Mapping[str, Any], prefix: str = "", *, keep_empty: bool = False) -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf value) pairs, depth first in the config's order.

    An empty dict has no leaves, so by default it yields nothing (the registry has no value to store);
    with keep_empty it is a leaf of its own, `{}`, so that a comparison sees `a: {}` differ from no `a`.
    """
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and (value or not keep_empty):
            yield from flatten(value, name + ".", keep_empty=keep_empty)
        else:
            yield name, value
