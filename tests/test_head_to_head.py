"""CI's reduced head-to-head: the real sweep file, every scheme and attack, 2 rounds, 1 seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fl_election.simulations import plot_results, sweep

SWEEP = Path(__file__).resolve().parents[1] / "simulations" / "sweeps" / "head_to_head.toml"


@pytest.mark.slow
def test_the_head_to_head_sweep_and_its_table_regenerate(tmp_path):
    out = tmp_path / "outputs"
    args = [str(SWEEP), "--output-dir", str(out), "--rounds", "2", "--seeds", "0", "--jobs", "2"]
    assert sweep.main(args) == 0
    meta = json.loads((out / "head_to_head" / "sweep.json").read_text())
    runs = list((out / "head_to_head").glob("*-seed0.json"))
    assert len(runs) == len(meta["variants"]) == len(meta["points"]) - len(meta["skipped"])
    figures = tmp_path / "figures"
    assert plot_results.main(["--outputs", str(out), "--figures", str(figures)]) == 0
    table = (figures / "head_to_head.md").read_text()
    for scheme in ("mv", "r2", "r3", "det", "fedavg", "krum", "multikrum", "bulyan"):
        assert f"| {scheme} | " in table
    assert "n/a (aggregation 'bulyan' needs num-workers n >= 4b + 3 = 27" in table
    assert (figures / "head_to_head.png").stat().st_size > 0
