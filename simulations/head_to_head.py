"""The head-to-head pipeline: tune every scheme's lr at every b, evaluate, write the tables.

``simulations/sweeps/head_to_head.toml`` names the schemes (each with the lr ladder it is
tuned on), the compute settings of the float schemes, the attacks and the profiles (how the
pipeline is cut)::

    python -m fl_election.simulations.head_to_head --profile quick --jobs 2

1. **Tune.** For each scheme, compute setting and ``b`` in ``{0, 1, 3, 6}``, run the
   profile's tuning attacks (``none`` at ``b = 0``) at 3 lrs of the scheme's ladder, on
   one seed and short runs; the lr with the best worst case wins (ties within 0.005: the
   best mean). While the winner is at an edge of the lrs tried, the next lr of the ladder
   is run too, so that the chosen lr is interior (or marked as the ladder's end).
2. **Evaluate.** Every attack of the profile at each point's chosen lr, on the profile's
   seeds, on longer runs.
3. **Tables.** ``docs/figures/head_to_head.md``: the worst case over attacks (mean over
   seeds) per scheme and ``b`` for both compute settings, with the worst attack; the lr
   table; the error metrics; the cost table (sample-gradients per step, serialized bytes
   per step, bytes to 0.90 test accuracy); the ``num-examples`` inflation table; and
   ``docs/figures/head_to_head.png``, the accuracy heatmap at ``b = 6``.

Every run is one JSON in ``outputs/head_to_head/{tune,eval}/``; a run whose JSON exists is
not run again, so a cut pipeline resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import tomllib
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fl_election.attacks import alie_z
from fl_election.config import RunConfig

from .sweep import CONF_DIR, run_one

SPEC = Path(__file__).resolve().parent / "sweeps" / "head_to_head.toml"
#: Target test accuracy of the bytes-to-accuracy column.
TARGET_ACCURACY = 0.90
#: lrs whose worst cases differ by at most this are tied (the best mean then decides).
TIE = 0.005
#: How the tables name the compute settings of the float schemes.
SETTING_TITLES = {"equal-batch": "equal batch (B = 240)", "equal-compute": "equal compute"}


@dataclass(frozen=True)
class Point:
    """One (scheme, compute setting, b) of the head-to-head."""

    scheme: str
    setting: str
    b: int

    @property
    def name(self) -> str:
        """``<scheme>-<setting>-b<b>``."""
        return f"{self.scheme}-{self.setting}-b{self.b}"


def load_spec(path: Path = SPEC) -> dict[str, Any]:
    """Read the head-to-head spec and check its names."""
    spec = tomllib.loads(path.read_text())
    spec["base"] = tomllib.loads((CONF_DIR / spec["conf"]).read_text())
    for name, profile in spec["profiles"].items():
        for key in ("float-attacks", "sign-attacks", "tune-float-attacks", "tune-sign-attacks"):
            unknown = sorted(set(profile[key]) - set(spec["attacks"]))
            if unknown:
                raise ValueError(f"profile {name!r}: {key} names no [attacks] table: {unknown}")
    for name, scheme in spec["schemes"].items():
        ladder = scheme.get("lr")
        if not isinstance(ladder, list) or len(ladder) < 3 or ladder != sorted(ladder):
            raise ValueError(f"scheme {name!r}: lr must be an increasing ladder of >= 3 values")
    return spec


def is_float(spec: dict[str, Any], scheme: str) -> bool:
    """Whether ``scheme`` sends float gradients (its compute setting then matters)."""
    return bool(spec["schemes"][scheme].get("aggregation", "election") != "election")


def points(spec: dict[str, Any]) -> list[Point]:
    """Every (scheme, setting, b) of the head-to-head, ``b = 0`` included."""
    out = []
    for scheme in spec["schemes"]:
        settings = list(spec["settings"]) if is_float(spec, scheme) else ["coded"]
        # A scheme with `attacked = false` is in the cost table only (b = 0).
        attacked = spec["schemes"][scheme].get("attacked", True)
        for setting in settings:
            for b in (0, *(spec["byzantine-counts"] if attacked else ())):
                out.append(Point(scheme, setting, b))
    return out


def attacks_of(
    spec: dict[str, Any], profile: dict[str, Any], point: Point, *, tune: bool
) -> list[str]:
    """Return the attacks a point faces (``none`` at ``b = 0``)."""
    if point.b == 0:
        return ["none"]
    kind = "float" if is_float(spec, point.scheme) else "sign"
    return list(profile[f"tune-{kind}-attacks" if tune else f"{kind}-attacks"])


def overrides(
    spec: dict[str, Any], point: Point, attack: str, lr: float, rounds: int, milestones: str
) -> dict[str, Any]:
    """Return the run config of one run: base, scheme, setting, attack, lr, length."""
    scheme = {k: v for k, v in spec["schemes"][point.scheme].items() if k not in ("lr", "attacked")}
    values = {**spec["base"], **scheme, **spec["settings"].get(point.setting, {})}
    values.update({k: v for k, v in spec["attacks"][attack].items()})
    if values.get("attack-z") == "baruch":
        values["attack-z"] = alie_z(int(values["num-workers"]), point.b) if point.b else 0.0
    values.update(
        {
            "byzantine-count": point.b,
            "lr": lr,
            "num-server-rounds": rounds,
            "lr-milestones": milestones,
        }
    )
    return values


def _config(values: dict[str, Any], folder: Path, name: str) -> RunConfig:
    return RunConfig.from_run_config({**values, "output-dir": str(folder), "run-name": name})


def _run_all(configs: list[RunConfig], jobs: int) -> None:
    """Run the configs whose JSON does not exist yet."""
    todo = [c for c in configs if not (Path(c.output_dir) / f"{c.run_name}.json").exists()]
    if not todo:
        return
    print(f"head-to-head: {len(todo)} runs ({len(configs) - len(todo)} done already)", flush=True)
    if jobs == 1:
        for cfg in todo:
            print(run_one(cfg), flush=True)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        for line in pool.map(run_one, todo):
            print(line, flush=True)


def _final(folder: Path, name: str) -> float:
    """Return the final test accuracy of one run (:func:`_accuracy`)."""
    return _accuracy(json.loads((folder / f"{name}.json").read_text()))


def _lr_name(lr: float) -> str:
    return f"{lr:g}"


def tune(spec: dict[str, Any], profile: dict[str, Any], out: Path, jobs: int) -> dict[str, Any]:
    """Choose each point's lr; return ``{point name: {"lr", "edge", "tried"}}``."""
    folder = out / "tune"
    folder.mkdir(parents=True, exist_ok=True)
    every = [p for p in points(spec) if _skipped(spec, p) is None]
    tried: dict[str, list[int]] = {}
    for p in every:
        ladder = spec["schemes"][p.scheme]["lr"]
        middle = len(ladder) // 2
        tried[p.name] = [middle - 1, middle, middle + 1][: len(ladder)]
    while True:
        configs = []
        for p in every:
            ladder = spec["schemes"][p.scheme]["lr"]
            for i in tried[p.name]:
                for attack in attacks_of(spec, profile, p, tune=True):
                    name = f"{p.name}-{attack}-lr{_lr_name(ladder[i])}"
                    values = overrides(
                        spec,
                        p,
                        attack,
                        ladder[i],
                        profile["tune-rounds"],
                        profile["tune-milestones"],
                    )
                    configs.append(_config({**values, "seed": 0}, folder, name))
        _run_all(configs, jobs)
        grown = False
        chosen = {}
        for p in every:
            ladder = spec["schemes"][p.scheme]["lr"]
            scores = {}
            for i in tried[p.name]:
                accuracies = [
                    _final(folder, f"{p.name}-{a}-lr{_lr_name(ladder[i])}")
                    for a in attacks_of(spec, profile, p, tune=True)
                ]
                scores[i] = (min(accuracies), float(np.mean(accuracies)))
            best_worst = max(s[0] for s in scores.values())
            best = max(
                (i for i, s in scores.items() if s[0] >= best_worst - TIE),
                key=lambda i: (scores[i][1], scores[i][0]),
            )
            low, high = min(tried[p.name]), max(tried[p.name])
            if best == low and low > 0:
                tried[p.name].append(low - 1)
                grown = True
            elif best == high and high < len(ladder) - 1:
                tried[p.name].append(high + 1)
                grown = True
            chosen[p.name] = {
                "lr": ladder[best],
                "edge": best in (0, len(ladder) - 1),
                "tried": {_lr_name(ladder[i]): list(scores[i]) for i in sorted(scores)},
            }
        if not grown:
            (out / "lr.json").write_text(json.dumps(chosen, indent=1))
            return chosen


def seeds_of(profile: dict[str, Any], b: int) -> list[int]:
    """Return the seeds a point is evaluated on."""
    return list(profile["seeds-at-b6"] if b == 6 else profile["seeds"])


def evaluate(
    spec: dict[str, Any], profile: dict[str, Any], chosen: dict[str, Any], out: Path, jobs: int
) -> None:
    """Run every attack at each point's chosen lr, on the profile's seeds."""
    folder = out / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    configs = []
    # Largest b first: a pipeline cut short has every scheme at b = 6.
    for p in sorted(points(spec), key=lambda p: -p.b):
        if _skipped(spec, p) is not None:
            continue
        lr = chosen[p.name]["lr"]
        for attack in attacks_of(spec, profile, p, tune=False):
            values = overrides(
                spec, p, attack, lr, profile["eval-rounds"], profile["eval-milestones"]
            )
            for seed in seeds_of(profile, p.b):
                cfg = _config({**values, "seed": seed}, folder, f"{p.name}-{attack}-seed{seed}")
                _reuse_tuning_run(cfg, out / "tune", f"{p.name}-{attack}-lr{_lr_name(lr)}")
                configs.append(cfg)
    inflation = spec["inflation"]
    for scheme in (s for s in inflation["schemes"] if s in spec["schemes"]):
        for weights in ("reported", "assigned"):
            for b in spec["byzantine-counts"]:
                p = Point(scheme, "equal-batch", b)
                values = overrides(
                    spec,
                    p,
                    "none",
                    chosen[p.name]["lr"],
                    profile["eval-rounds"],
                    profile["eval-milestones"],
                )
                values.update({k: v for k, v in inflation.items() if k != "schemes"})
                values["num-examples-weights"] = weights
                name = f"{p.name}-inflation-{weights}-seed0"
                configs.append(_config({**values, "seed": 0}, folder, name))
    _run_all(configs, jobs)


def _reuse_tuning_run(cfg: RunConfig, tune_folder: Path, tune_name: str) -> None:
    """Copy a tuning run that is exactly this evaluation run (same config but its name)."""
    target = Path(cfg.output_dir) / f"{cfg.run_name}.json"
    source = tune_folder / f"{tune_name}.json"
    if target.exists() or not source.exists():
        return
    record = json.loads(source.read_text())
    wanted = cfg.to_run_config()
    # through RunConfig: a key added since the tuning run was written takes its default
    ran = RunConfig.from_run_config(record["config"]).to_run_config()
    ignored = ("run-name", "output-dir")
    if {k: v for k, v in ran.items() if k not in ignored} == {
        k: v for k, v in wanted.items() if k not in ignored
    }:
        record["config"] = wanted
        record["reused_from"] = str(source.name)
        target.write_text(json.dumps(record, indent=1))


# ---------------------------------------------------------------------------- tables
def _records(folder: Path, names: Iterable[str]) -> list[dict[str, Any]]:
    return [json.loads((folder / f"{n}.json").read_text()) for n in names]


def _accuracy(record: dict[str, Any]) -> float:
    """Return a run's final test accuracy; a run that stopped (failed closed) scores 0."""
    return float(record["final"]["test-accuracy"]) if "final" in record else 0.0


def _mean_metric(record: dict[str, Any], key: str) -> float | None:
    values = [r[key] for r in record.get("rounds", []) if key in r]
    return float(np.mean(values)) if values else None


def _compute(record: dict[str, Any]) -> tuple[float, int, int]:
    """Sample-gradients per step: per node (mean, max) and for the whole system."""
    code = record["code"]
    per_partition = int(record["config"]["batch-size"]) // int(code["k"])
    loads = [int(x) * per_partition for x in code["loads"]]
    return float(np.mean(loads)), max(loads), sum(loads)


def _bytes_to_target(record: dict[str, Any]) -> tuple[float, int | None, float | None]:
    """Return bytes per step (both ways), the step 0.90 is reached, the bytes until then."""
    rounds = record.get("rounds", [])
    wire = [r["wire-down-bytes"] + r["wire-up-bytes"] for r in rounds if "wire-down-bytes" in r]
    per_step = float(np.mean(wire)) if wire else float("nan")
    for r in rounds:
        if r.get("test-accuracy", 0.0) >= TARGET_ACCURACY:
            spent = sum(
                x["wire-down-bytes"] + x["wire-up-bytes"]
                for x in rounds
                if x["round"] <= r["round"] and "wire-down-bytes" in x
            )
            return per_step, int(r["round"]), float(spent)
    return per_step, None, None


def _cell(
    spec: dict[str, Any], profile: dict[str, Any], folder: Path, p: Point
) -> tuple[float, str, dict[str, float]]:
    """Worst case over attacks (mean over seeds), the worst attack, every attack's mean."""
    means = {}
    for attack in attacks_of(spec, profile, p, tune=False):
        names = [f"{p.name}-{attack}-seed{s}" for s in seeds_of(profile, p.b)]
        if not all((folder / f"{n}.json").exists() for n in names):
            continue
        means[attack] = float(np.mean([_accuracy(r) for r in _records(folder, names)]))
    if not means:
        return float("nan"), "", means
    worst = min(means, key=lambda a: means[a])
    return means[worst], worst, means


def _skipped(spec: dict[str, Any], p: Point) -> str | None:
    """Why a point cannot run (Bulyan needs n >= 4b + 3), or None."""
    try:
        overrides_ = overrides(spec, p, "none", 0.01, 1, "")
        RunConfig.from_run_config({**overrides_, "lr-milestones": ""})
    except ValueError as err:
        return str(err).removeprefix("invalid run config: ")
    return None


def tables(spec: dict[str, Any], profile_name: str, out: Path, figures: Path) -> Path:
    """Write ``head_to_head.md`` and ``head_to_head.png``; return the markdown's path."""
    profile = spec["profiles"][profile_name]
    folder = out / "eval"
    chosen = json.loads((out / "lr.json").read_text())
    budgets = [0, *spec["byzantine-counts"]]
    every = points(spec)
    why = {p.name: _skipped(spec, p) for p in every}  # one config check per point
    runnable = [p for p in every if why[p.name] is None]
    skipped = {name: reason for name, reason in why.items() if reason is not None}
    cells = {p.name: _cell(spec, profile, folder, p) for p in runnable}
    lines = [
        f"Profile `{profile_name}`: tuned on seed 0, {profile['tune-rounds']} steps; evaluated "
        f"on {profile['eval-rounds']} steps, seeds {profile['seeds']} "
        f"({profile['seeds-at-b6']} at b = 6). Final test accuracy, worst case over the "
        "attacks (mean over seeds), the worst attack in brackets.",
        "",
    ]
    sign_schemes = [s for s in spec["schemes"] if not is_float(spec, s)]
    float_schemes = [s for s in spec["schemes"] if is_float(spec, s)]
    for setting in spec["settings"]:
        lines += [f"### Worst case, float schemes at {SETTING_TITLES.get(setting, setting)}", ""]
        lines += [
            "| scheme | sample-gradients / step: node (mean, max), system | "
            + " | ".join(f"b = {b}" for b in budgets)
            + " |",
            "|---|---|" + "---|" * len(budgets),
        ]
        for scheme in [*sign_schemes, *float_schemes]:
            s = "coded" if scheme in sign_schemes else setting
            row = [scheme]
            base = Point(scheme, s, 6 if scheme == "det" else 0)
            names = [f"{base.name}-{a}-seed0" for a in attacks_of(spec, profile, base, tune=False)]
            existing = [n for n in names if (folder / f"{n}.json").exists()]
            if existing:
                mean, peak, total = _compute(_records(folder, existing[:1])[0])
                row.append(f"{mean:.0f}, {peak}, {total}" + (" (b = 6)" if scheme == "det" else ""))
            else:
                row.append("")
            for b in budgets:
                p = Point(scheme, s, b)
                if p.name in skipped:
                    row.append("n/a")
                    continue
                if p.name not in cells:
                    row.append("-")  # a cost-only scheme
                    continue
                value, worst, _ = cells[p.name]
                row.append(f"{value:.3f}" + (f" ({worst})" if worst and worst != "none" else ""))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if skipped:
        lines += ["Not run: " + "; ".join(f"{k}: {v}" for k, v in sorted(skipped.items())), ""]
    # lr table
    lines += ["### Chosen lr per point (* = at the ladder's end)", ""]
    lines += [
        "| scheme | setting | " + " | ".join(f"b = {b}" for b in budgets) + " |",
        "|---|---|" + "---|" * len(budgets),
    ]
    for scheme in spec["schemes"]:
        for s in list(spec["settings"]) if is_float(spec, scheme) else ["coded"]:
            row = [scheme, s]
            for b in budgets:
                name = Point(scheme, s, b).name
                c = chosen.get(name)
                if name in skipped or c is None:
                    row.append("n/a" if name in skipped else "-")
                    continue
                row.append(f"{c['lr']:g}" + ("*" if c["edge"] else ""))
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    # error metrics at b = 6, worst attack, and honest b = 0
    lines += [
        "### One error metric for every scheme",
        "",
        "Mean over the run's steps, against the honest mean gradient g of the step's "
        "minibatch: magnitude-weighted sign error (0 for honest FedAvg) and cosine; the "
        "partition-majority error only for coded schemes. Float schemes at equal compute.",
        "",
        "| scheme | b = 0: sign error | b = 0: cosine | b = 0: partition-majority error "
        "| b = 6 worst attack | sign error | cosine | partition-majority error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scheme in [*sign_schemes, *float_schemes]:
        s = "coded" if scheme in sign_schemes else "equal-compute"
        row = [scheme]
        for b in (0, 6):
            p = Point(scheme, s, b)
            if p.name not in cells and p.name not in skipped:
                row += (["-"] * 3) if b == 0 else ["-", "", "", ""]
                continue
            if p.name in skipped:
                row += (["n/a"] * 3) if b == 0 else ["n/a", "", "", ""]
                continue
            attack = "none" if b == 0 else cells[p.name][1]
            if b == 6:
                row.append(attack)
            if not attack:
                row += ["", "", ""]
                continue
            rec = _records(folder, [f"{p.name}-{attack}-seed0"])[0]
            if "final" not in rec:
                row += ["failed closed (diverged)", "", ""]
                continue
            for key in ("weighted-sign-error", "cosine", "vote-error-rate"):
                metric = _mean_metric(rec, key)
                row.append("" if metric is None else f"{metric:.3f}")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    # cost
    lines += [
        "### Cost: bytes per step and to 0.90 test accuracy (b = 0, no attack)",
        "",
        "Serialized protobuf messages, both directions, every node, per step; the steps "
        f"until the first evaluation at >= {TARGET_ACCURACY:.2f} (every "
        f"{spec['base']['eval-every']} steps) and the bytes spent until then.",
        "",
        "| scheme | setting | bytes / step | steps to 0.90 | bytes to 0.90 |",
        "|---|---|---|---|---|",
    ]
    for scheme in spec["schemes"]:
        for s in list(spec["settings"]) if is_float(spec, scheme) else ["coded"]:
            name = f"{Point(scheme, s, 0).name}-none-seed0"
            if not (folder / f"{name}.json").exists():
                continue
            per_step, steps, spent = _bytes_to_target(_records(folder, [name])[0])
            reached = "not reached | - |"
            if steps is not None and spent is not None:
                reached = f"{steps} | {spent / 2**20:.2f} MiB |"
            lines.append(f"| {scheme} | {s} | {per_step / 1024:.1f} KiB | " + reached)
    lines.append("")
    # inflation
    lines += [
        "### num-examples inflation (IPM epsilon 1, claiming 100x its share)",
        "",
        "| scheme | weights | " + " | ".join(f"b = {b}" for b in spec["byzantine-counts"]) + " |",
        "|---|---|" + "---|" * len(spec["byzantine-counts"]),
    ]
    for scheme in (s for s in spec["inflation"]["schemes"] if s in spec["schemes"]):
        for weights in ("reported", "assigned"):
            row = [scheme, weights]
            for b in spec["byzantine-counts"]:
                name = f"{Point(scheme, 'equal-batch', b).name}-inflation-{weights}-seed0"
                row.append(
                    f"{_accuracy(_records(folder, [name])[0]):.3f}"
                    if (folder / f"{name}.json").exists()
                    else ""
                )
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    figures.mkdir(parents=True, exist_ok=True)
    md = figures / "head_to_head.md"
    md.write_text("\n".join(lines))
    _heatmap(spec, profile, cells, skipped, figures / "head_to_head.png")
    return md


def _heatmap(
    spec: dict[str, Any],
    profile: dict[str, Any],
    cells: dict[str, tuple[float, str, dict[str, float]]],
    skipped: dict[str, str],
    path: Path,
) -> None:
    """Accuracy per scheme and attack at b = 6 (float schemes at equal compute)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(s, "coded" if not is_float(spec, s) else "equal-compute") for s in spec["schemes"]]
    attacks = list(dict.fromkeys([*profile["sign-attacks"], *profile["float-attacks"]]))
    grid = np.full((len(rows), len(attacks)), np.nan)
    for i, (scheme, setting) in enumerate(rows):
        name = Point(scheme, setting, 6).name
        if name in skipped or name not in cells:
            continue
        for j, attack in enumerate(attacks):
            grid[i, j] = cells[name][2].get(attack, np.nan)
    # Schemes not run at b = 6 (Bulyan needs n >= 27, the cost-only FedAvg E = 5) are left out.
    shown = [i for i in range(len(rows)) if np.isfinite(grid[i]).any()]
    rows, grid = [rows[i] for i in shown], grid[shown]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(attacks), 1.0 + 0.38 * len(rows)))
    image = ax.imshow(np.ma.masked_invalid(grid), vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(attacks)), attacks, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [s for s, _ in rows], fontsize=7)
    for i in range(len(rows)):
        for j in range(len(attacks)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=5)
    fig.colorbar(image, ax=ax, label="final test accuracy")
    ax.set_title("b = 6: accuracy per attack (float schemes at equal compute)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline (or one stage of it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--stage", choices=("all", "tune", "evaluate", "tables"), default="all")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/head_to_head"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    try:
        spec = load_spec(args.spec)
        if args.profile not in spec["profiles"]:
            raise ValueError(f"unknown profile {args.profile!r}; valid: {sorted(spec['profiles'])}")
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    profile = spec["profiles"][args.profile]
    out = args.output_dir / args.profile
    out.mkdir(parents=True, exist_ok=True)
    if args.stage in ("all", "tune"):
        tune(spec, profile, out, args.jobs)
    if args.stage in ("all", "evaluate"):
        evaluate(spec, profile, json.loads((out / "lr.json").read_text()), out, args.jobs)
    if args.stage in ("all", "tables"):
        print(tables(spec, args.profile, out, args.figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
