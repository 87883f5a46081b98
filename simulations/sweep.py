"""Run a sweep: one experiment per (variant, seed), one JSON result per run.

A sweep file (``simulations/sweeps/*.toml``) names a flat override file in
``simulations/conf/`` (the same file ``flwr run . --run-config`` takes), optional
``[overrides]`` for every run, the seeds, and named variants, each a set of run-config
overrides::

    python -m fl_election.simulations.sweep simulations/sweeps/digits_n15_b6.toml

Runs go through :class:`fl_election.simulations.inprocess.InProcessGrid` (the real
ServerApp logic and ClientApp, without Ray); results land in
``outputs/<sweep>/<variant>-seed<s>.json`` and ``python -m
fl_election.simulations.plot_results`` turns them into the README's figures and tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tomllib
from pathlib import Path
from typing import Any

from fl_election.config import RunConfig

CONF_DIR = Path(__file__).resolve().parent / "conf"


def load_sweep(path: Path) -> dict[str, Any]:
    """Read a sweep file and check every variant's config before anything runs."""
    sweep = tomllib.loads(path.read_text())
    for key in ("conf", "variants"):
        if key not in sweep:
            raise ValueError(f"{path}: a sweep needs a {key!r} entry")
    # the sweep's own [overrides] apply to every variant, on top of the conf file
    base = {**tomllib.loads((CONF_DIR / sweep["conf"]).read_text()), **sweep.get("overrides", {})}
    sweep["base"] = base
    sweep.setdefault("seeds", [0])
    sweep.setdefault("title", path.stem)
    for name, overrides in sweep["variants"].items():
        RunConfig.from_run_config({**base, **overrides})  # fail early, before any training
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"variant name {name!r} must be letters, digits, '-', '_' or '.'")
    return sweep


def run_configs(sweep: dict[str, Any], name: str, output_dir: Path) -> list[RunConfig]:
    """Return the configs of one sweep, one per (variant, seed)."""
    configs = []
    for variant, overrides in sweep["variants"].items():
        for seed in sweep["seeds"]:
            values = {**sweep["base"], **overrides, "seed": seed}
            values["output-dir"] = str(output_dir / name)
            values["run-name"] = f"{variant}-seed{seed}"
            configs.append(RunConfig.from_run_config(values))
    return configs


def main(argv: list[str] | None = None) -> int:
    """Run the sweep files given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep TOML files")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs"))
    parser.add_argument("--seeds", type=str, default="", help="override: comma-separated seeds")
    parser.add_argument("--rounds", type=int, default=0, help="override num-server-rounds")
    parser.add_argument("--skip-existing", action="store_true", help="keep finished runs")
    args = parser.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.WARNING)

    from fl_election.audit import sanitize
    from fl_election.simulations.inprocess import run_inprocess
    from fl_election.strategies import QuorumError

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
        for cfg in run_configs(sweep, name, args.output_dir):
            target = Path(cfg.output_dir) / f"{cfg.run_name}.json"
            if args.skip_existing and target.exists():
                continue
            try:
                record = run_inprocess(cfg)
            except QuorumError as err:
                # Failing closed is a result: record it and go on with the sweep.
                stopped = {"config": cfg.to_run_config(), "stopped": sanitize(err, 400)}
                target.write_text(json.dumps(stopped, indent=1))
                print(f"{name}/{cfg.run_name}: stopped: {stopped['stopped']}", flush=True)
                continue
            final: dict[str, float] = record["final"]
            print(
                f"{name}/{cfg.run_name}: final test accuracy "
                f"{final['test-accuracy']:.4f} ({record['wall_seconds']:.0f} s)",
                flush=True,
            )
        meta = {"title": sweep["title"], "conf": sweep["conf"], "variants": sweep["variants"]}
        (args.output_dir / name / "sweep.json").write_text(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
