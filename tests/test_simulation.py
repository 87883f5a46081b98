"""The ServerApp logic and the ClientApp together, through the in-process grid and Flower."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fl_election.clients.client_app import app as client_app
from fl_election.config import RunConfig
from fl_election.simulations.experiment import run_experiment
from fl_election.simulations.inprocess import InProcessGrid, run_inprocess

ROOT = Path(__file__).resolve().parents[1]


def small(tmp_path, **changes) -> RunConfig:
    values = dict(
        num_server_rounds=4,
        eval_every=2,
        num_workers=5,
        byzantine_count=1,
        code="deterministic",
        batch_size=60,
        output_dir=str(tmp_path),
        lr=0.01,
    )
    values.update(changes)
    return RunConfig(**values)


def test_inprocess_run_writes_result_model_and_plot(tmp_path):
    cfg = small(tmp_path, attack="reverse")
    record = run_inprocess(cfg)
    stem = cfg.default_run_name
    assert (tmp_path / f"{stem}.json").exists() and (tmp_path / f"{stem}.png").exists()
    saved = json.loads((tmp_path / f"{stem}.json").read_text())
    assert saved["config"] == cfg.to_run_config()
    assert saved["code"]["certificate"]["verdict"] == "certified"
    assert len(saved["rounds"]) == 4
    assert all(r["valid-votes"] == 5 and r["rejected-replies"] == 0 for r in saved["rounds"])
    assert {"agreement", "abstain-fraction", "uplink-bytes", "lr"} <= set(saved["rounds"][0])
    assert record["final"]["test-accuracy"] == saved["rounds"][-1]["test-accuracy"]
    model = np.load(tmp_path / f"{stem}.model.npz")
    assert len(model.files) > 0


def test_same_seed_same_model_and_different_seed_differs(tmp_path):
    a = run_inprocess(small(tmp_path / "a"))
    b = run_inprocess(small(tmp_path / "b"))
    c = run_inprocess(small(tmp_path / "c", seed=1))
    assert a["final"] == b["final"]
    assert a["final"] != c["final"]


@pytest.mark.parametrize("attack", ["silent", "malformed"])
def test_silent_and_malformed_byzantines_are_rejected_and_the_run_goes_on(tmp_path, attack):
    record = run_inprocess(
        small(
            tmp_path,
            attack=attack,
            byzantine_count=2,
            num_workers=7,
            code="bernoulli",
            batch_size=70,
        )
    )
    for row in record["rounds"]:
        assert row["valid-votes"] == 5
        assert row["rejected-replies"] == 2


def test_a_crashing_client_is_counted_and_the_vote_goes_on(tmp_path):
    # b = 0: one crashed honest node is the crash budget c = 1 (fault budget f = 1)
    cfg = small(tmp_path, byzantine_count=0, crash_budget=1, attack="none")
    grid = InProcessGrid(client_app, cfg.num_workers, cfg.to_run_config())
    # one node holds a run config it cannot parse: its ClientApp raises on every message
    broken = next(iter(grid.contexts.values()))
    broken.run_config = {**broken.run_config, "attack": "no-such-attack"}
    record = run_experiment(grid, cfg)
    assert all(r["rejected-replies"] == 1 and r["valid-votes"] == 4 for r in record["rounds"])


@pytest.mark.parametrize(
    "attack", ["omniscient", "alie", "directional", "random", "label-flip", "gaussian-noise", "ipm"]
)
def test_every_attack_runs_end_to_end(tmp_path, attack):
    record = run_inprocess(small(tmp_path, attack=attack, num_server_rounds=2))
    assert all(r["valid-votes"] == 5 for r in record["rounds"])


@pytest.mark.parametrize("attack", ["omniscient", "alie", "random"])
def test_fgm_byzantines_forge_float_gradients(tmp_path, attack):
    record = run_inprocess(small(tmp_path, aggregation="fgm", attack=attack, num_server_rounds=2))
    assert all(r["valid-votes"] == 5 and r["rejected-replies"] == 0 for r in record["rounds"])


def test_fgm_baseline_runs_and_pays_float32_uplink(tmp_path):
    election = run_inprocess(small(tmp_path / "e", code="uncoded", attack="reverse"))
    fgm = run_inprocess(small(tmp_path / "f", aggregation="fgm", attack="reverse"))
    model = np.load(next((tmp_path / "f").glob("*.model.npz")))
    d = sum(model[key].size for key in model.files)
    plane = (d + 7) // 8
    assert fgm["rounds"][0]["uplink-bytes"] == 5 * 4 * d
    # a vote is one sign plane, plus an abstain plane where the local vote has zeros
    assert 5 * plane <= election["rounds"][0]["uplink-bytes"] <= 10 * plane


def test_deployment_node_config_makes_a_node_byzantine(tmp_path):
    cfg = small(tmp_path, byzantine_count=1, byzantine_selection="node-config", attack="none")
    node_configs = [{"partition-id": i} for i in range(5)]
    node_configs[2] = {"partition-id": 2, "byzantine": "true", "attack": "malformed"}
    grid = InProcessGrid(client_app, 5, cfg.to_run_config(), node_configs=node_configs)
    record = run_experiment(grid, cfg)
    assert all(r["rejected-replies"] == 1 for r in record["rounds"])
