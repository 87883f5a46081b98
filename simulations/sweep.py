"""Run a sweep: one experiment per (variant, seed), one JSON result per run.

A sweep file (``simulations/sweeps/*.toml``) names a flat override file in
``simulations/conf/`` (the same file ``flwr run . --run-config`` takes), optional
``[overrides]`` for every run, the seeds, and named variants, each a set of run-config
overrides::

    python -m fl_election.simulations.sweep simulations/sweeps/digits_n15_b6.toml

A sweep may also describe a grid instead of (or besides) listing variants: named
``[schemes.<name>]`` and ``[attacks.<name>]`` override tables, and ``[grid.<part>]`` tables
each crossing ``schemes``, ``byzantine-count`` and ``attacks`` (an attack without a table
is ``attack = "<name>"``). Each point becomes the variant ``<scheme>-b<b>-<attack>``; a
point whose config is invalid (Bulyan needs ``n >= 4b + 3``) is listed as skipped, with
the reason, in ``sweep.json``::

    [schemes.krum]
    aggregation = "krum"
    [grid.float]
    schemes = ["krum"]
    byzantine-count = [1, 3, 6]
    attacks = ["alie", "ipm"]

Runs go through :class:`fl_election.simulations.inprocess.InProcessGrid` (the real
ServerApp logic and ClientApp, without Ray); results land in
``outputs/<sweep>/<variant>-seed<s>.json`` and ``python -m
fl_election.simulations.plot_results`` turns them into the README's figures and tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import tomllib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from fl_election.config import RunConfig

CONF_DIR = Path(__file__).resolve().parent / "conf"


def load_sweep(path: Path) -> dict[str, Any]:
    """Read a sweep file and check every variant's config before anything runs."""
    sweep = tomllib.loads(path.read_text())
    if "conf" not in sweep:
        raise ValueError(f"{path}: a sweep needs a 'conf' entry")
    if "variants" not in sweep and "grid" not in sweep:
        raise ValueError(f"{path}: a sweep needs 'variants' or a 'grid'")
    sweep.setdefault("variants", {})
    # the sweep's own [overrides] apply to every variant, on top of the conf file
    base = {**tomllib.loads((CONF_DIR / sweep["conf"]).read_text()), **sweep.get("overrides", {})}
    sweep["base"] = base
    sweep.setdefault("seeds", [0])
    sweep.setdefault("title", path.stem)
    sweep["variants"] = dict(sweep["variants"])
    sweep["skipped"] = {}
    for name, overrides in expand_grid(sweep).items():
        try:
            RunConfig.from_run_config({**base, **overrides})
        except ValueError as err:
            sweep["skipped"][name] = str(err).removeprefix("invalid run config: ")
            continue
        sweep["variants"][name] = overrides
    for name, overrides in sweep["variants"].items():
        RunConfig.from_run_config({**base, **overrides})  # fail early, before any training
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"variant name {name!r} must be letters, digits, '-', '_' or '.'")
    return sweep


def expand_grid(sweep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the variants of the sweep's ``[grid.*]`` tables, ``<scheme>-b<b>-<attack>``."""
    schemes = sweep.get("schemes", {})
    attacks = sweep.get("attacks", {})
    variants: dict[str, dict[str, Any]] = {}
    for part, grid in sweep.get("grid", {}).items():
        unknown = sorted(set(grid) - {"schemes", "byzantine-count", "attacks"})
        if unknown:
            raise ValueError(f"grid {part!r}: unknown key(s) {unknown}")
        for scheme in grid.get("schemes", []):
            if scheme not in schemes:
                raise ValueError(f"grid {part!r}: no [schemes.{scheme}] table")
            for b in grid.get("byzantine-count", [sweep["base"].get("byzantine-count", 0)]):
                for attack in grid.get("attacks", ["none"]):
                    name = f"{scheme}-b{b}-{attack}"
                    sweep.setdefault("points", {})[name] = {
                        "scheme": scheme,
                        "byzantine-count": b,
                        "attack": attack,
                    }
                    variants[name] = {
                        **schemes[scheme],
                        "byzantine-count": b,
                        **attacks.get(attack, {"attack": attack}),
                    }
    return variants


def run_configs(sweep: dict[str, Any], name: str, output_dir: Path) -> list[RunConfig]:
    """Return the configs of one sweep, one per (variant, seed)."""
    configs = []
    # seed-major: a sweep cut short still has every variant at its first seeds
    for seed in sweep["seeds"]:
        for variant, overrides in sweep["variants"].items():
            values = {**sweep["base"], **overrides, "seed": seed}
            values["output-dir"] = str(output_dir / name)
            values["run-name"] = f"{variant}-seed{seed}"
            configs.append(RunConfig.from_run_config(values))
    return configs


def run_one(cfg: RunConfig) -> str:
    """Run one config in this process; return the line the sweep prints for it."""
    from fl_election.audit import sanitize
    from fl_election.simulations.inprocess import run_inprocess
    from fl_election.strategies import QuorumError

    logging.getLogger("flwr").setLevel(logging.WARNING)
    target = Path(cfg.output_dir) / f"{cfg.run_name}.json"
    try:
        record = run_inprocess(cfg)
    except QuorumError as err:
        # Failing closed is a result: record it and go on with the sweep.
        stopped = {"config": cfg.to_run_config(), "stopped": sanitize(err, 400)}
        target.write_text(json.dumps(stopped, indent=1))
        return f"{cfg.run_name}: stopped: {stopped['stopped']}"
    final: dict[str, float] = record["final"]
    return (
        f"{cfg.run_name}: final test accuracy {final['test-accuracy']:.4f} "
        f"({record['wall_seconds']:.0f} s)"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the sweep files given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep TOML files")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs"))
    parser.add_argument("--seeds", type=str, default="", help="override: comma-separated seeds")
    parser.add_argument("--rounds", type=int, default=0, help="override num-server-rounds")
    parser.add_argument("--skip-existing", action="store_true", help="keep finished runs")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs in parallel, one process each (default: 1)"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        print(f"error: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    try:
        sweeps = [(p.stem, load_sweep(p)) for p in args.sweeps]
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, sweep in sweeps:
        if args.seeds:
            sweep["seeds"] = [int(s) for s in args.seeds.split(",")]
        if args.rounds:
            sweep["base"]["num-server-rounds"] = args.rounds
        folder = args.output_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "title": sweep["title"],
            "conf": sweep["conf"],
            "variants": sweep["variants"],
            "skipped": sweep["skipped"],
            "points": sweep.get("points", {}),
        }
        (folder / "sweep.json").write_text(json.dumps(meta, indent=1))
        todo = [
            cfg
            for cfg in run_configs(sweep, name, args.output_dir)
            if not (args.skip_existing and (folder / f"{cfg.run_name}.json").exists())
        ]
        if args.jobs == 1:
            for cfg in todo:
                print(f"{name}/{run_one(cfg)}", flush=True)
            continue
        # Worker processes are spawned (torch and Flower do not survive a fork well) and
        # reused: each pays the imports once, and a run leaves nothing behind that the
        # next one reads (run_inprocess builds every object from its config).
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            for line in pool.map(run_one, todo):
                print(f"{name}/{line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
