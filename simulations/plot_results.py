"""Regenerate every figure and table of the README from the sweep results.

For ``outputs/head_to_head/<profile>/`` it writes the head-to-head pipeline's tables and
heatmap (:func:`fl_election.simulations.head_to_head.tables`). For each other
``outputs/<sweep>/`` of a grid sweep (schemes x b x attacks) it writes the worst-case
accuracy table, the cost table and a heatmap (:func:`head_to_head`); for every other
sweep it plots the test accuracy per round (mean over seeds, with the min-max band) of
every variant into ``docs/figures/<sweep>.png`` and writes the final accuracies as a
markdown table into ``docs/figures/<sweep>.md``::

    python -m fl_election.simulations.plot_results            # every sweep under outputs/
    python -m fl_election.simulations.plot_results --outputs outputs --figures docs/figures
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np


def load_runs(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Group the JSON results of a sweep folder by variant."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*-seed*.json")):
        variant = path.stem.rsplit("-seed", 1)[0]
        runs.setdefault(variant, []).append(json.loads(path.read_text()))
    return runs


def accuracy_curve(record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Return the rounds and test accuracies of one run."""
    points = [(0, record["initial"]["test-accuracy"])] if record.get("initial") else []
    points += [(r["round"], r["test-accuracy"]) for r in record["rounds"] if "test-accuracy" in r]
    rounds, accuracy = zip(*points, strict=True)
    return np.asarray(rounds), np.asarray(accuracy)


def summary_table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown table of final accuracy, code redundancy and uplink per variant."""
    lines = [
        "| variant | code | r | max load | final test accuracy (mean, min-max) | seeds | "
        "uplink per round |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, stopped_or_not in runs.items():
        records = [r for r in stopped_or_not if "stopped" not in r]
        if not records:  # every seed failed closed (e.g. below quorum)
            reason = stopped_or_not[0]["stopped"].split(";")[0]
            lines.append(f"| {variant} | | | | stopped: {reason} | {len(stopped_or_not)} | |")
            continue
        finals = np.array([r["final"]["test-accuracy"] for r in records])
        code = records[0]["code"]
        uplink = np.mean([row.get("uplink-bytes", 0) for row in records[0]["rounds"]])
        lines.append(
            f"| {variant} | {code['name']} | {code['redundancy']:.2f} | {code['max_load']} | "
            f"{finals.mean():.3f} ({finals.min():.3f}-{finals.max():.3f}) | {len(finals)} | "
            f"{uplink / 1024:.1f} KiB |"
        )
    return "\n".join(lines) + "\n"


def plot_sweep(folder: Path, figures: Path) -> Path | None:
    """Plot one sweep; return the figure path (None when the folder holds no run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(folder)
    if not runs:
        return None
    meta_path = folder / "sweep.json"
    title = json.loads(meta_path.read_text())["title"] if meta_path.exists() else folder.name
    # Many variants sharing name prefixes (fig4b-*, fig5b-*, ...) get one panel per prefix.
    groups: dict[str, list[str]] = {}
    for variant in runs:
        prefix = variant.split("-")[0] if len(runs) > 8 else ""
        groups.setdefault(prefix, []).append(variant)
    columns = min(3, len(groups))
    rows = -(-len(groups) // columns)
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(6 if columns == 1 else 4.2 * columns, 3.8 if rows == 1 else 3.0 * rows),
        squeeze=False,
    )
    for ax, (prefix, variants) in zip(axes.flat, groups.items(), strict=False):
        for variant in variants:
            curves = [accuracy_curve(r) for r in runs[variant] if "stopped" not in r]
            if not curves:  # failed closed: nothing to plot
                continue
            rounds = curves[0][0]
            stacked = np.stack([c[1] for c in curves if len(c[1]) == len(rounds)])
            ax.plot(rounds, stacked.mean(axis=0), label=variant)
            if len(stacked) > 1:
                ax.fill_between(rounds, stacked.min(axis=0), stacked.max(axis=0), alpha=0.2)
        ax.set_xlabel("round (SignSGD step)")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7 if prefix else 8, loc="lower right")
        if prefix:
            ax.set_title(prefix, fontsize=9)
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    if len(groups) > 1:
        fig.suptitle(title, fontsize=9)
    else:
        axes.flat[0].set_title(title, fontsize=9)
    fig.tight_layout()
    figures.mkdir(parents=True, exist_ok=True)
    path = figures / f"{folder.name}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    (figures / f"{folder.name}.md").write_text(summary_table(runs))
    return path


#: Round-time model of the head-to-head's time-to-target column (the paper's: a round
#: lasts as long as its slowest worker, ``max load x B/k`` sample gradients, plus the
#: uploads through the server's shared ingress). Assumed, not measured: a sample gradient
#: of 1 ms and 1 MB/s of ingress, a constrained edge deployment.
SAMPLE_SECONDS = 1e-3
INGRESS_BYTES_PER_SECOND = 1e6
TARGET_ACCURACY = 0.85
#: Accuracy a run that stopped is counted at: chance for the 10 classes every dataset here has.
CHANCE_ACCURACY = 0.1


def _points(folder: Path) -> dict[str, dict[str, Any]]:
    meta_path = folder / "sweep.json"
    if not meta_path.exists():
        return {}
    points: dict[str, dict[str, Any]] = json.loads(meta_path.read_text()).get("points", {})
    return points


def _round_seconds(record: dict[str, Any]) -> float:
    """Seconds of one round of ``record``'s run under the round-time model."""
    from fl_election.cost import round_cost

    cfg = record["config"]
    loads = record["code"]["loads"]
    k = record["code"]["k"]
    rounds = record["rounds"]
    d = next(
        (
            int(8 * r["uplink-bytes"] / (r["uplink-bits-per-coordinate"] * r["valid-votes"]))
            for r in rounds
            if r.get("uplink-bits-per-coordinate")
        ),
        1,
    )
    scheme = "float32" if cfg["aggregation"] != "election" else "sign"
    if cfg["aggregation"] == "election" and cfg["tie-rule"] == "abstain":
        scheme = "sign+abstain"
    cost = round_cost(
        loads,
        grad_seconds=SAMPLE_SECONDS * (cfg["batch-size"] // k),
        num_params=d,
        uplink_bytes_per_second=INGRESS_BYTES_PER_SECOND,
        scheme=scheme,
        shared_uplink=True,
    )
    return cost.total_seconds


def _time_to_target(record: dict[str, Any]) -> float | None:
    """Model seconds until the test accuracy first reaches :data:`TARGET_ACCURACY`."""
    for row in record["rounds"]:
        if row.get("test-accuracy", 0.0) >= TARGET_ACCURACY:
            return float(row["round"]) * _round_seconds(record)
    return None


#: Worst-case accuracies closer than this are a tie in the lr choice.
LR_TIE = 0.02


def chosen_learning_rates(
    attacked: dict[tuple[str, int], float], clean: dict[tuple[str, int], float]
) -> dict[str, tuple[float, float, float | None]]:
    """Pick each scheme's lr from the ``<scheme>-lr<value>`` variants of a tuning sweep.

    Parameters
    ----------
    attacked : dict[tuple[str, int], float]
        Worst-case accuracy per (scheme, b > 0).
    clean : dict[tuple[str, int], float]
        No-attack accuracy per (scheme, 0).

    Returns
    -------
    dict[str, tuple[float, float, float | None]]
        Per base scheme: the chosen lr, its worst case at the scheme's largest b, and its
        no-attack accuracy. Schemes without an ``-lr`` suffix are left out.
    """
    candidates: dict[str, list[tuple[float, float, float | None]]] = {}
    for (scheme, b), accuracy in attacked.items():
        base, sep, lr_text = scheme.rpartition("-lr")
        if not sep:
            continue
        if any(s == scheme and other > b for (s, other) in attacked):
            continue  # only the scheme's largest b counts
        candidates.setdefault(base, []).append((float(lr_text), accuracy, clean.get((scheme, 0))))
    chosen = {}
    for base, options in candidates.items():
        best = max(accuracy for _, accuracy, _ in options)
        tied = [option for option in options if option[1] >= best - LR_TIE]
        chosen[base] = max(tied, key=lambda option: (option[2] or 0.0, option[1]))
    return chosen


def head_to_head(folder: Path, figures: Path) -> Path | None:
    """Worst-case accuracy (scheme x b) of a grid sweep: a table, a heatmap, the costs.

    For every scheme and ``b`` the worst case is the minimum, over the attacks run
    against it, of the final test accuracy averaged over seeds. The cost table takes,
    per scheme at the largest ``b``, the run of its worst attack: vote error rate (mean
    over rounds), bytes per step both ways, maximum worker load and time to target
    accuracy under the round-time model (:data:`SAMPLE_SECONDS`,
    :data:`INGRESS_BYTES_PER_SECOND`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = _points(folder)
    if not points:
        return None
    runs = load_runs(folder)
    meta = json.loads((folder / "sweep.json").read_text())
    schemes = list(dict.fromkeys(p["scheme"] for p in points.values()))
    budgets = sorted({int(p["byzantine-count"]) for p in points.values()})
    # (scheme, b) -> attack -> (mean final accuracy over seeds, records)
    cells: dict[tuple[str, int], dict[str, tuple[float, list[dict[str, Any]]]]] = {}
    seed_counts: list[int] = []
    for variant, point in points.items():
        records = [r for r in runs.get(variant, []) if "stopped" not in r]
        stopped = [r for r in runs.get(variant, []) if "stopped" in r]
        finals = [r["final"]["test-accuracy"] for r in records]
        # a run that stopped (failed closed: its model diverged to NaN and every reply was
        # rejected, or too few votes) delivers no model: count it at chance accuracy
        finals += [CHANCE_ACCURACY] * len(stopped)
        if not finals:
            continue
        key = (point["scheme"], int(point["byzantine-count"]))
        cells.setdefault(key, {})[point["attack"]] = (float(np.mean(finals)), records)
        seed_counts.append(len(finals))
    skipped = meta.get("skipped", {})
    full = max(seed_counts, default=0)
    short = {
        key
        for key, attacks in cells.items()
        if any(len(runs.get(f"{key[0]}-b{key[1]}-{a}", [])) < full for a in attacks)
    }

    def worst(key: tuple[str, int]) -> tuple[float, str, list[dict[str, Any]]] | None:
        if key not in cells:
            return None
        attack, (accuracy, records) = min(cells[key].items(), key=lambda item: item[1][0])
        return accuracy, attack, records

    header = "| scheme | " + " | ".join(f"b = {b}" for b in budgets) + " |"
    lines = [header, "|---|" + "---|" * len(budgets)]
    grid = np.full((len(schemes), len(budgets)), np.nan)
    for i, scheme in enumerate(schemes):
        row = []
        for j, b in enumerate(budgets):
            found = worst((scheme, b))
            if found is None:
                reason = next(
                    (why for name, why in skipped.items() if name.startswith(f"{scheme}-b{b}-")),
                    "",
                )
                row.append(f"n/a ({reason.split('(')[0].strip()})" if reason else "")
                continue
            accuracy, attack, _ = found
            grid[i, j] = accuracy
            mark = " *" if (scheme, b) in short else ""
            row.append((f"{accuracy:.3f} ({attack})" if b else f"{accuracy:.3f}") + mark)
        lines.append(f"| {scheme} | " + " | ".join(row) + " |")
    seeds = sorted({r["config"]["seed"] for rs in runs.values() for r in rs})
    table = [
        f"Worst-case final test accuracy (minimum over attacks of the mean over seeds "
        f"{seeds}; the worst attack in brackets):",
        "",
        *lines,
        "",
    ]
    if short:
        table[-1:] = [
            "",
            f"\\* fewer than {full} seeds in this cell (the sweep was cut short).",
            "",
        ]
    table += [
        f"Costs per scheme at its largest b (the worst attack's runs; time to "
        f"{TARGET_ACCURACY:.2f} under the round-time model: {SAMPLE_SECONDS * 1e3:g} ms per "
        f"sample gradient, {INGRESS_BYTES_PER_SECOND / 1e6:g} MB/s shared ingress):",
        "",
        "| scheme | b | worst attack | vote error rate | uplink / step | downlink / step | "
        "max load | time to target (model s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scheme in schemes:
        largest = max((b for b in budgets if (scheme, b) in cells), default=None)
        found = worst((scheme, largest)) if largest is not None else None
        if found is None:
            continue
        accuracy, attack, records = found
        if not records:  # every seed of the worst attack diverged and stopped
            table.append(
                f"| {scheme} | {largest} | {attack} | every run stopped (model diverged, "
                "replies rejected) | | | | never |"
            )
            continue
        errors = [
            np.mean([r["vote-error-rate"] for r in rec["rounds"] if "vote-error-rate" in r])
            for rec in records
            if any("vote-error-rate" in r for r in rec["rounds"])
        ]
        up = np.mean(
            [np.mean([r.get("uplink-bytes", 0) for r in rec["rounds"]]) for rec in records]
        )
        down = np.mean(
            [np.mean([r.get("downlink-bytes", 0) for r in rec["rounds"]]) for rec in records]
        )
        times = [_time_to_target(rec) for rec in records]
        reached = [t for t in times if t is not None]
        time_text = (
            f"{np.mean(reached):.1f} ({len(reached)}/{len(times)} seeds)" if reached else "never"
        )
        error_text = f"{np.mean(errors):.3f}" if errors else ""
        table.append(
            f"| {scheme} | {largest} | {attack} | {error_text} | {up / 1024:.1f} KiB | "
            f"{down / 1024:.1f} KiB | {records[0]['code']['max_load']} | {time_text} |"
        )
    chosen = chosen_learning_rates(
        {key: value[0] for key in cells if key[1] > 0 and (value := worst(key)) is not None},
        {key: value[0] for key in cells if key[1] == 0 and (value := worst(key)) is not None},
    )
    if chosen:
        table += [
            "",
            "Learning rate chosen per scheme: the best worst case at the largest b; lrs within "
            f"{LR_TIE:g} of it are tied and the best no-attack accuracy (b = 0) decides:",
            "",
            "| scheme | lr | worst case | no attack |",
            "|---|---|---|---|",
        ]
        for base, (lr, worst_case, clean) in chosen.items():
            clean_text = f"{clean:.3f}" if clean is not None else ""
            table.append(f"| {base} | {lr:g} | {worst_case:.3f} | {clean_text} |")
    if skipped:
        by_reason: dict[str, list[str]] = {}
        for name, why in sorted(skipped.items()):
            by_reason.setdefault(why, []).append(name)
        table += ["", "Not run (invalid for the scheme):", ""]
        table += [
            f"- {', '.join(names) if len(names) < 3 else names[0] + f' and {len(names) - 1} more'}"
            f": {why}"
            for why, names in by_reason.items()
        ]

    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(budgets), 0.9 + 0.38 * len(schemes)))
    image = ax.imshow(np.ma.masked_invalid(grid), vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(budgets)), [f"b = {b}" for b in budgets])
    ax.set_yticks(range(len(schemes)), schemes)
    for i in range(len(schemes)):
        for j in range(len(budgets)):
            text = "n/a" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="worst-case test accuracy")
    ax.set_title(textwrap.fill(meta.get("title", folder.name), 60), fontsize=8)
    fig.tight_layout()
    figures.mkdir(parents=True, exist_ok=True)
    path = figures / f"{folder.name}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    (figures / f"{folder.name}.md").write_text("\n".join(table) + "\n")
    return path


#: The README's main-job figure: the default config (seed 0) and uncoded SignSGD-MV, taken
#: from the digits_n15_b6 sweep, whose bernoulli-r3 runs are the main job's config.
MAIN_JOB_RUNS = {
    "Bernoulli r = 3 (the main job)": "digits_n15_b6/bernoulli-r3-seed0.json",
    "uncoded SignSGD-MV": "digits_n15_b6/signsgd-mv-seed0.json",
}


def plot_main_job(outputs: Path, figures: Path) -> Path | None:
    """Plot the main job against uncoded SignSGD-MV (None when the runs are missing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {label: outputs / rel for label, rel in MAIN_JOB_RUNS.items()}
    if not all(p.exists() for p in paths.values()):
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, path in paths.items():
        ax.plot(*accuracy_curve(json.loads(path.read_text())), marker=".", label=label)
    ax.set_xlabel("round (SignSGD step)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("digits, n = 15, b = 6 omniscient Byzantines, seed 0", fontsize=9)
    fig.tight_layout()
    figures.mkdir(parents=True, exist_ok=True)
    path = figures / "main_job.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


#: Where the head-to-head pipeline writes, and its profiles, most thorough first.
PIPELINE_FOLDER = "head_to_head"
PIPELINE_PROFILES = ("full", "quick", "ci")


def main(argv: list[str] | None = None) -> int:
    """Plot every sweep folder under ``--outputs``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outputs", type=Path, default=Path("outputs"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
    args = parser.parse_args(argv)
    folders = (
        sorted(p for p in args.outputs.iterdir() if p.is_dir()) if args.outputs.exists() else []
    )
    candidates = [
        head_to_head(folder, args.figures) if _points(folder) else plot_sweep(folder, args.figures)
        for folder in folders
        if folder.name != PIPELINE_FOLDER
    ]
    # The head-to-head pipeline's results (simulations/head_to_head.py), one folder per
    # profile: the tables of the most thorough profile that finished.
    from fl_election.simulations import head_to_head as pipeline

    for profile in PIPELINE_PROFILES:
        folder = args.outputs / PIPELINE_FOLDER / profile
        if (folder / "lr.json").exists():
            spec = pipeline.load_spec()
            candidates.append(pipeline.tables(spec, profile, folder, args.figures))
            break
    candidates.append(plot_main_job(args.outputs, args.figures))
    written = [p for p in candidates if p is not None]
    if not written:
        print(f"no sweep results under {args.outputs}", file=sys.stderr)
        return 1
    for path in written:
        table = path.with_suffix(".md")
        print(f"wrote {path}" + (f" and {table}" if table.exists() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
