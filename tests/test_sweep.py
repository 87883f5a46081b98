"""The sweep runner and plot_results: one JSON per run, a figure and a table per sweep."""

from __future__ import annotations

import json

from fl_election.simulations import plot_results, sweep


def test_sweep_then_plot(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(
        'title = "tiny"\nconf = "digits_n5.toml"\nseeds = [0, 1]\n\n'
        "[overrides]\nnum-server-rounds = 2\neval-every = 1\n\n"
        '[variants.det]\ncode = "deterministic"\n\n[variants.mv]\ncode = "uncoded"\n'
    )
    out = tmp_path / "outputs"
    assert sweep.main([str(spec), "--output-dir", str(out)]) == 0
    runs = sorted(p.name for p in (out / "tiny").glob("*.json"))
    assert runs == [
        "det-seed0.json",
        "det-seed1.json",
        "mv-seed0.json",
        "mv-seed1.json",
        "sweep.json",
    ]
    record = json.loads((out / "tiny" / "det-seed1.json").read_text())
    assert record["config"]["seed"] == 1 and record["config"]["num-server-rounds"] == 2
    figures = tmp_path / "figures"
    assert plot_results.main(["--outputs", str(out), "--figures", str(figures)]) == 0
    assert (figures / "tiny.png").stat().st_size > 0
    table = (figures / "tiny.md").read_text()
    assert "| det |" in table and "| mv |" in table


def test_sweep_rejects_a_bad_variant_before_running(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text('conf = "digits_n5.toml"\n[variants.x]\nbyzantine-count = 3\n')
    assert sweep.main([str(spec), "--output-dir", str(tmp_path)]) == 2
    assert "b < n/2" in capsys.readouterr().err
    assert not list(tmp_path.glob("**/*.json"))


def test_a_run_that_fails_closed_is_recorded_and_the_sweep_goes_on(tmp_path):
    spec = tmp_path / "quorum.toml"
    spec.write_text(
        'title = "quorum"\nconf = "digits_n5.toml"\nseeds = [0]\n\n'
        "[overrides]\nnum-server-rounds = 4\neval-every = 2\nbyzantine-count = 2\n\n"
        '[variants.silent]\nattack = "silent"\ncode = "uncoded"\nfault-rule = "conservative"\n\n'
        '[variants.reverse]\nattack = "reverse"\ncode = "uncoded"\n'
    )
    out = tmp_path / "outputs"
    assert sweep.main([str(spec), "--output-dir", str(out)]) == 0
    stopped = json.loads((out / "quorum" / "silent-seed0.json").read_text())
    # the conservative rule counts the 2 silent rows on top of b = 2 voting Byzantines
    assert "rounds in a row not applied" in stopped["stopped"]
    assert "final" in json.loads((out / "quorum" / "reverse-seed0.json").read_text())
    figures = tmp_path / "figures"
    assert plot_results.main(["--outputs", str(out), "--figures", str(figures)]) == 0
    assert "| silent | | | | stopped: " in (figures / "quorum.md").read_text()
