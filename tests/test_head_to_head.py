"""CI's reduced head-to-head: the real pipeline on the real spec, cut to a few schemes.

Tune, evaluate and the tables, one scheme of each family, 2 steps per run (the spec's
``ci`` profile).
"""

from __future__ import annotations

import re
import tomllib

import pytest

from fl_election.simulations import head_to_head

#: One scheme per family: a code, a certified code, Flower's, ByzFL's, the weighted two
#: the inflation table needs, and Bulyan (not runnable at b = 6 with n = 15).
KEEP = ("r3", "det", "fedavg", "multikrum", "bulyan", "nnm-trmean")


def trimmed_spec(tmp_path):
    """The shipped spec with only :data:`KEEP` schemes and b = 6, as a file."""
    text = head_to_head.SPEC.read_text()
    blocks = re.split(r"(?m)^(?=\[)", text)
    kept = []
    for block in blocks:
        match = re.match(r"\[schemes\.([^\]]+)\]", block)
        if match and match.group(1) not in KEEP:
            continue
        kept.append(block)
    spec = "".join(kept).replace("byzantine-counts = [1, 3, 6]", "byzantine-counts = [6]")
    assert "byzantine-counts = [6]" in spec
    path = tmp_path / "head_to_head.toml"
    path.write_text(spec)
    assert set(tomllib.loads(spec)["schemes"]) == set(KEEP)
    return path


@pytest.mark.slow
def test_the_head_to_head_pipeline_tunes_evaluates_and_writes_its_tables(tmp_path):
    spec = trimmed_spec(tmp_path)
    out, figures = tmp_path / "out", tmp_path / "figures"
    args = ["--spec", str(spec), "--profile", "ci", "--jobs", "2"]
    args += ["--output-dir", str(out), "--figures", str(figures)]
    assert head_to_head.main(args) == 0
    table = (figures / "head_to_head.md").read_text()
    for setting in ("equal batch (B = 240)", "equal compute"):
        assert f"Worst case, float schemes at {setting}" in table
    for scheme in KEEP:
        assert f"| {scheme} | " in table
    assert "bulyan-equal-batch-b6: aggregation 'bulyan' needs num-workers n >= 4b + 3" in table
    # the coded schemes' compute comes from their code: r3 = 2064 sample-gradients a step
    assert "| r3 | 138, 240, 2064 |" in table
    assert "| nnm-trmean | 95, 95, 1425 |" in table
    for section in ("Chosen lr per point", "One error metric", "Cost:", "num-examples inflation"):
        assert section in table
    assert "| fedavg | reported |" in table and "| multikrum | assigned |" in table
    assert (figures / "head_to_head.png").stat().st_size > 0
    lr = (out / "ci" / "lr.json").read_text()
    assert '"nnm-trmean-equal-compute-b6"' in lr
