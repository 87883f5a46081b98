"""The run config of a node, parsed and validated once per process."""

from __future__ import annotations

from functools import lru_cache

from flwr.app import Context

from fl_election.config import ConfigValue, RunConfig


@lru_cache(maxsize=8)
def _parse(items: frozenset[tuple[str, ConfigValue]]) -> RunConfig:
    return RunConfig.from_run_config(dict(items))


def run_config(context: Context) -> RunConfig:
    """Return the validated :class:`RunConfig` of this node's run (cached)."""
    return _parse(frozenset(context.run_config.items()))


@lru_cache(maxsize=8)
def _byzantine_rows(items: frozenset[tuple[str, ConfigValue]]) -> tuple[int, ...]:
    return _parse(items).byzantine_workers()


def byzantine_rows(context: Context) -> tuple[int, ...]:
    """Return the code rows that are Byzantine in this run (cached)."""
    return _byzantine_rows(frozenset(context.run_config.items()))
