import tomllib
from pathlib import Path

import pytest

from fl_election.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]


def pyproject_defaults() -> dict:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data["tool"]["flwr"]["app"]["config"]


def test_every_knob_has_the_same_default_in_pyproject():
    defaults = pyproject_defaults()
    assert list(defaults) == list(RunConfig.keys())
    assert RunConfig.from_run_config(defaults) == RunConfig()
    assert RunConfig().to_run_config() == defaults


def test_round_trip_and_overrides():
    cfg = RunConfig.from_run_config({"code": "uncoded", "byzantine-count": 3, "lr": 1})
    assert cfg.code == "uncoded" and cfg.byzantine_count == 3 and cfg.lr == 1.0
    assert RunConfig.from_run_config(cfg.to_run_config()) == cfg
    assert cfg.k == 15 and cfg.partition_batch_size == 16


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"byzantine-count": 8}, "must satisfy 0 <= b < n/2"),
        ({"num-workers": 4, "byzantine-count": 2}, "must satisfy 0 <= b < n/2"),
        ({"attack": "nope"}, "attack 'nope' is not one of"),
        ({"code": "nope"}, "code 'nope' is not one of"),
        ({"dataset": "imagenet"}, "dataset 'imagenet' is not one of"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"momentum": 1.0}, "momentum must be in [0, 1)"),
        ({"batch-size": 3}, "batch-size (3) must be >= the number of partitions"),
        ({"byzantine-selection": "explicit", "byzantine-ids": "1,2"}, "lists 2 worker(s)"),
        (
            {"byzantine-count": 2, "byzantine-selection": "explicit", "byzantine-ids": "1,99"},
            "distinct worker indices",
        ),
        ({"lr-milestones": "10,x"}, "comma-separated list of integers"),
        ({"attack": "directional", "attack-direction": 2}, "direction"),
        ({"batchsize": 3}, "unknown run-config key(s) ['batchsize']"),
        ({"lr": "fast"}, "'lr' must be a float"),
    ],
)
def test_bad_values_stop_before_training_with_a_clear_message(override, message):
    with pytest.raises(ValueError, match=None) as err:
        RunConfig.from_run_config(override)
    assert message in str(err.value)


def test_byzantine_workers_selections():
    worst = RunConfig(byzantine_count=3, byzantine_selection="worst")
    assert len(worst.byzantine_workers()) == 3
    explicit = RunConfig(byzantine_count=2, byzantine_selection="explicit", byzantine_ids="4, 7")
    assert explicit.byzantine_workers() == (4, 7)
    random_a = RunConfig(byzantine_count=3, byzantine_selection="random", seed=1)
    assert random_a.byzantine_workers() == random_a.byzantine_workers()
    assert len(set(random_a.byzantine_workers())) == 3


def test_fgm_uses_the_identity_allocation():
    cfg = RunConfig(aggregation="fgm")
    code = cfg.allocation_code()
    assert code.max_load == 1 and code.n == 15
