"""Regenerate every figure and table of the README from the sweep results.

For each ``outputs/<sweep>/`` it plots the test accuracy per round (mean over seeds, with
the min-max band) of every variant into ``docs/figures/<sweep>.png`` and writes the final
accuracies as a markdown table into ``docs/figures/<sweep>.md``::

    python -m fl_election.simulations.plot_results            # every sweep under outputs/
    python -m fl_election.simulations.plot_results --outputs outputs --figures docs/figures
"""

from __future__ import annotations

import argparse
import json
import sys
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
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for variant, records in runs.items():
        curves = [accuracy_curve(r) for r in records if "stopped" not in r]
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
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    figures.mkdir(parents=True, exist_ok=True)
    path = figures / f"{folder.name}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    (figures / f"{folder.name}.md").write_text(summary_table(runs))
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


def main(argv: list[str] | None = None) -> int:
    """Plot every sweep folder under ``--outputs``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outputs", type=Path, default=Path("outputs"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
    args = parser.parse_args(argv)
    folders = (
        sorted(p for p in args.outputs.iterdir() if p.is_dir()) if args.outputs.exists() else []
    )
    candidates = [plot_sweep(folder, args.figures) for folder in folders]
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
