import math
import os
import tomllib
from pathlib import Path

import pytest

from fl_election import config as config_module
from fl_election.config import TRAIN_SIZES, RunConfig

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
    # CLI-style values: booleans as strings, integers as integral floats
    coerced = RunConfig.from_run_config({"download": "True", "seed": 3.0})
    assert coerced.download is True and coerced.seed == 3 and isinstance(coerced.seed, int)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"byzantine-count": 8}, "must satisfy 0 <= b < n/2"),
        ({"num-workers": 4, "byzantine-count": 2}, "must satisfy 0 <= b < n/2"),
        ({"attack": "nope"}, "attack 'nope' is not one of"),
        ({"code": "nope"}, "code 'nope' is not one of"),
        ({"dataset": "imagenet"}, "dataset 'imagenet' is not one of"),
        ({"lr": 0.0}, "lr must be a finite number in (0, 1000]"),
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


# ----------------------------------------------------------------------------------------------
# Fail closed: every knob is checked before training, and every message names its key.

INF = math.inf
NAN = math.nan


@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        # output path and names: these crashed after the last round, losing the run
        ({"output-dir": "/dev/null/x"}, "output-dir", "'/dev/null' is not a directory"),
        ({"output-dir": "/tmp/a\x00b"}, "output-dir", "must not contain a NUL byte"),
        ({"output-dir": "out\nput"}, "output-dir", "must not contain control characters"),
        ({"output-dir": "x" * 256}, "output-dir", "folder name longer than 255 bytes"),
        ({"output-dir": "ab/" * 1400}, "output-dir", "must be at most 4095 bytes"),
        ({"run-name": "a/b"}, "run-name", "must be a plain file name"),
        ({"run-name": "a\\b"}, "run-name", "must be a plain file name"),
        ({"run-name": "a\x00b"}, "run-name", "must not contain a NUL byte"),
        ({"run-name": "a\tb"}, "run-name", "must not contain control characters"),
        ({"run-name": ".."}, "run-name", "must not be '.' or '..'"),
        ({"run-name": "."}, "run-name", "must not be '.' or '..'"),
        ({"run-name": "x" * 201}, "run-name", "must be at most 200 bytes"),
        ({"run-name": "\u00e9" * 101}, "run-name", "must be at most 200 bytes"),
        ({"data-root": "data\x00"}, "data-root", "must not contain a NUL byte"),
        # learning rate: crashed in round 1 or gave a NaN model
        ({"lr": INF}, "lr", "lr must be a finite number in (0, 1000]"),
        ({"lr": NAN}, "lr", "lr must be a finite number in (0, 1000]"),
        ({"lr": 1e308}, "lr", "lr must be a finite number in (0, 1000]"),
        ({"lr": -0.1}, "lr", "lr must be a finite number in (0, 1000]"),
        ({"lr": 10**400}, "lr", "'lr' must be a finite float"),
        ({"weight-decay": 1e308}, "weight-decay", "weight-decay must be a finite number in [0"),
        ({"weight-decay": INF}, "weight-decay", "weight-decay must be a finite number in [0"),
        ({"weight-decay": -1e-4}, "weight-decay", "weight-decay must be a finite number in [0"),
        ({"lr": 10.0, "weight-decay": 0.5}, "weight-decay", "lr * weight-decay = 10 * 0.5"),
        ({"lr-milestones": "-5"}, "lr-milestones", "strictly increasing integers in [1, "),
        ({"lr-milestones": "0,50"}, "lr-milestones", "strictly increasing integers in [1, "),
        ({"lr-milestones": "100,50"}, "lr-milestones", "strictly increasing integers"),
        ({"lr-milestones": "50,50"}, "lr-milestones", "strictly increasing integers"),
        ({"lr-milestones": "2000000"}, "lr-milestones", "strictly increasing integers"),
        ({"lr-gamma": NAN}, "lr-gamma", "lr-gamma must be a finite number in (0, 1]"),
        ({"lr-gamma": INF}, "lr-gamma", "lr-gamma must be a finite number in (0, 1]"),
        ({"momentum": NAN}, "momentum", "momentum must be in [0, 1)"),
        # noise and attack parameters
        ({"grad-noise-std": INF}, "grad-noise-std", "grad-noise-std must be a finite number"),
        ({"grad-noise-std": NAN}, "grad-noise-std", "grad-noise-std must be a finite number"),
        ({"grad-noise-std": 1e4}, "grad-noise-std", "grad-noise-std must be a finite number"),
        ({"attack-z": INF}, "attack-z", "attack-z must be a finite number in [0, 1000]"),
        ({"attack-z": -1.0}, "attack-z", "attack-z must be a finite number in [0, 1000]"),
        ({"attack-std": INF}, "attack-std", "attack-std must be a finite number in [0, 1000]"),
        ({"attack-std": NAN}, "attack-std", "attack-std must be a finite number in [0, 1000]"),
        ({"attack-direction": 2}, "attack-direction", "attack-direction must be +1 or -1"),
        ({"attack-direction": 0}, "attack-direction", "attack-direction must be +1 or -1"),
        ({"malformed-kind": "huge"}, "malformed-kind", "malformed-kind 'huge' is not one of"),
        # sizes bounded by the dataset and by memory
        ({"batch-size": 2**63}, "batch-size", "must be <= the digits training-set size 1437"),
        ({"batch-size": 10**7}, "batch-size", "must be <= the digits training-set size 1437"),
        ({"batch-size": 1438}, "batch-size", "must be <= the digits training-set size 1437"),
        (
            {"dataset": "cifar10", "batch-size": 50_001},
            "batch-size",
            "must be <= the cifar10 training-set size 50000",
        ),
        ({"num-workers": 2**63}, "num-workers", "num-workers must be an integer in [1, 1024]"),
        ({"num-workers": 0}, "num-workers", "num-workers must be an integer in [1, 1024]"),
        ({"num-partitions": 2**63}, "num-partitions", "num-partitions must be an integer in [0"),
        ({"num-partitions": -1}, "num-partitions", "num-partitions must be an integer in [0"),
        ({"num-threads": 2**63}, "num-threads", "num-threads must be an integer in [1, 1024]"),
        ({"num-threads": 0}, "num-threads", "num-threads must be an integer in [1, 1024]"),
        # seeds
        ({"seed": -1}, "seed", "seed must be an integer in [0, 4294967295], got -1"),
        ({"seed": 2**64}, "seed", "seed must be an integer in [0, 4294967295]"),
        ({"seed": 2**32}, "seed", "seed must be an integer in [0, 4294967295]"),
        ({"code-seed": -1}, "code-seed", "code-seed must be an integer in [0, 4294967295]"),
        ({"code-seed": 2**64}, "code-seed", "code-seed must be an integer in [0, 4294967295]"),
        # every other float is finite, every other int in a sane range
        ({"redundancy": INF}, "redundancy", "redundancy must be a finite number in (0, 1024]"),
        ({"redundancy": NAN}, "redundancy", "redundancy must be a finite number in (0, 1024]"),
        (
            {"aggregation": "fgm", "redundancy": 0.0},
            "redundancy",
            "redundancy must be a finite number in (0, 1024]",
        ),
        ({"redundancy": 6.0}, "redundancy", "redundancy r = 6 must be <= k = 5"),
        ({"round-timeout": INF}, "round-timeout", "round-timeout must be a finite number in [1"),
        ({"round-timeout": NAN}, "round-timeout", "round-timeout must be a finite number in [1"),
        ({"round-timeout": 0.0}, "round-timeout", "round-timeout must be a finite number in [1"),
        ({"eval-every": 0}, "eval-every", "eval-every must be an integer in [1, 1000000]"),
        ({"eval-every": 2**63}, "eval-every", "eval-every must be an integer in [1, 1000000]"),
        ({"client-eval-every": -1}, "client-eval-every", "client-eval-every must be an integer"),
        ({"client-eval-every": 2**63}, "client-eval-every", "client-eval-every must be an integer"),
        ({"num-server-rounds": 0}, "num-server-rounds", "num-server-rounds must be an integer in"),
        (
            {"num-server-rounds": 10**6 + 1},
            "num-server-rounds",
            "num-server-rounds must be an integer in [1, 1000000]",
        ),
        ({"repetition-group": 0}, "repetition-group", "repetition-group must be an integer in"),
        ({"repetition-group": 2**63}, "repetition-group", "repetition-group must be an integer"),
        (
            {"code": "repetition", "repetition-group": 4},
            "repetition-group",
            "repetition-group 4 must divide num-workers n = 15",
        ),
        ({"code-tolerance": -1}, "code-tolerance", "code-tolerance must be an integer in [0"),
        ({"code-tolerance": 2**63}, "code-tolerance", "code-tolerance must be an integer in [0"),
        (
            {"code": "deterministic", "code-tolerance": 8},
            "code-tolerance",
            "code-tolerance b = 8 must be < n/2",
        ),
        ({"byzantine-ids": "1,x"}, "byzantine-ids", "comma-separated list of integers"),
        # choices from a fixed set
        ({"dataset": "imagenet"}, "dataset", "dataset 'imagenet' is not one of"),
        ({"model": "vgg"}, "model", "model 'vgg' is not one of"),
        ({"code": "ldpc"}, "code", "code 'ldpc' is not one of"),
        ({"aggregation": "mean"}, "aggregation", "aggregation 'mean' is not one of"),
        ({"attack": "nope"}, "attack", "attack 'nope' is not one of"),
        ({"byzantine-selection": "all"}, "byzantine-selection", "byzantine-selection 'all' is"),
        # types (the flat mapping's values are coerced, naming the key)
        ({"seed": 1.5}, "seed", "'seed' must be a int"),
        ({"num-threads": "4"}, "num-threads", "'num-threads' must be a int"),
    ],
)
def test_every_bad_knob_is_refused_before_training_naming_its_key(override, key, message):
    with pytest.raises(ValueError) as err:
        RunConfig.from_run_config(override)
    text = str(err.value)
    assert key in text
    assert message in text


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seed": "0"}, "invalid run config: seed must be an integer, got '0'"),
        ({"seed": True}, "invalid run config: seed must be an integer, got True"),
        ({"lr": "fast"}, "invalid run config: lr must be a number, got 'fast'"),
        ({"download": "yes"}, "invalid run config: download must be a boolean, got 'yes'"),
        ({"run_name": None}, "invalid run config: run-name must be a string, got None"),
        ({"lr": 10**400}, "invalid run config: lr must be a finite number in (0, 1000]"),
    ],
)
def test_direct_construction_checks_types_and_names_the_key(changes, message):
    with pytest.raises(ValueError) as err:
        RunConfig(**changes)
    assert message in str(err.value)


def test_output_dir_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for path in (blocker, blocker / "sub", blocker / "sub" / "deeper"):
        with pytest.raises(ValueError, match="output-dir cannot be created") as err:
            RunConfig(output_dir=str(path))
        assert repr(str(blocker)) in str(err.value)


def test_output_dir_under_home_is_expanded(tmp_path, monkeypatch):
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("HOME", str(blocker))
    with pytest.raises(ValueError, match="output-dir cannot be created"):
        RunConfig(output_dir="~/results")


def test_output_dir_that_is_not_writable_is_refused(tmp_path, monkeypatch):
    # The tests may run as root, for whom every folder is writable: fake the answer.
    asked = []

    def access(path, mode):
        asked.append((path, mode))
        return False

    monkeypatch.setattr(config_module.os, "access", access)
    with pytest.raises(ValueError, match="output-dir cannot be created or written"):
        RunConfig(output_dir=str(tmp_path / "new" / "run"))
    assert asked == [(str(tmp_path), os.W_OK | os.X_OK)]


def test_output_dir_is_checked_without_creating_anything(tmp_path, monkeypatch):
    target = tmp_path / "new" / "deeper"
    assert RunConfig(output_dir=str(target)).output_dir == str(target)
    assert RunConfig(output_dir=str(tmp_path)).output_dir == str(tmp_path)
    assert not (tmp_path / "new").exists()
    # a relative path resolves at save time (FL_ELECTION_OUTPUT_ROOT or the working
    # directory of that moment): only its text is checked, nothing is looked up or made
    monkeypatch.chdir(tmp_path)
    RunConfig(output_dir="relative/outputs", run_name="ok-name.v2")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"batch_size": 1437},
        {"dataset": "mnist", "batch_size": 60_000},
        {"dataset": "cifar10", "batch_size": 50_000},
        {"seed": 2**32 - 1, "code_seed": 2**32 - 1},
        {"num_workers": 1024, "num_threads": 1024},
        {"num_partitions": 1024, "redundancy": 1024.0, "batch_size": 1024},
        {"lr": 1000.0, "weight_decay": 0.0},
        {"lr": 1000.0, "weight_decay": 0.001},
        {"num_server_rounds": 10**6, "eval_every": 10**6, "lr_milestones": "1,999999"},
        {"lr_milestones": ""},
        {"attack": "alie", "attack_z": 1000.0},
        {"grad_noise_std": 1000.0, "attack_std": 1000.0},
        {"round_timeout": 7 * 24 * 3600.0},
        {"round_timeout": 1.0},
        {"run_name": "x" * 200},
        {"code": "repetition", "repetition_group": 5},
        {"aggregation": "fgm", "code": "repetition", "repetition_group": 4},
        {"attack_direction": -1},
    ],
)
def test_values_at_the_bounds_are_accepted(changes):
    cfg = RunConfig(**changes)
    assert RunConfig.from_run_config(cfg.to_run_config()) == cfg


def test_train_sizes_cover_every_dataset_and_match_digits():
    from fl_election import data

    assert set(TRAIN_SIZES) == set(data.DATASETS)
    splits = data.load_dataset("digits")
    assert TRAIN_SIZES["digits"] == splits.train_x.shape[0] == splits.train_y.shape[0]
    assert TRAIN_SIZES["digits"] + splits.test_x.shape[0] == 1797


def test_validation_loads_no_dataset(monkeypatch):
    from fl_election import data

    def refuse(*args, **kwargs):
        raise AssertionError("validation must not load a dataset")

    monkeypatch.setattr(data, "load_dataset", refuse)
    RunConfig(dataset="cifar10", model="resnet18", download=True)
    RunConfig.from_run_config({"dataset": "mnist", "batch-size": 60_000})


# ----------------------------------------------------------------------------------------------
# Config gaps refused before round 1, naming the key (issue 13, item 7).


@pytest.mark.parametrize(
    "run_config",
    [
        {"byzantine-count": 6, "byzantine_count": 0},
        {"byzantine_count": 0, "byzantine-count": 6},
        {"byzantine_count": 0},
    ],
)
def test_snake_case_keys_are_refused_naming_the_kebab_key(run_config):
    # both spellings used to be accepted, and the last one won silently
    with pytest.raises(ValueError) as err:
        RunConfig.from_run_config(run_config)
    text = str(err.value)
    assert "'byzantine_count'" in text and "'byzantine-count'" in text
    assert "snake_case" in text


def test_override_parser_refuses_a_key_given_twice():
    from fl_election.config import parse_run_config_overrides

    assert parse_run_config_overrides(["code='deterministic'", "byzantine-count=6"]) == {
        "code": "deterministic",
        "byzantine-count": 6,
    }
    with pytest.raises(ValueError, match="run-config key 'byzantine-count' is given twice"):
        parse_run_config_overrides(["byzantine-count=6", "lr=0.01", "byzantine-count=0"])
    with pytest.raises(ValueError, match="'byzantine-count' is not a TOML key=value"):
        parse_run_config_overrides(["byzantine-count"])


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["byzantine-count=6", "byzantine-count=0"], "'byzantine-count' is given twice"),
        (["byzantine-count=6", "byzantine_count=0"], "'byzantine_count' -> 'byzantine-count'"),
    ],
)
def test_inprocess_cli_refuses_a_key_twice_before_running(monkeypatch, capsys, overrides, key):
    from fl_election.simulations import inprocess

    def refuse(cfg):
        raise AssertionError("a refused config must not run")

    monkeypatch.setattr(inprocess, "run_inprocess", refuse)
    with pytest.raises(SystemExit) as exit_info:
        inprocess.main(["code='deterministic'", *overrides])
    assert exit_info.value.code == 2
    assert key in capsys.readouterr().err


@pytest.mark.parametrize("selection", ["random", "worst", "node-config"])
def test_byzantine_ids_need_explicit_selection(selection):
    with pytest.raises(ValueError) as err:
        RunConfig.from_run_config(
            {"byzantine-count": 2, "byzantine-selection": selection, "byzantine-ids": "1, 4"}
        )
    text = str(err.value)
    assert "byzantine-ids" in text and "byzantine-selection = 'explicit'" in text
    # an empty list (the default) is fine with every selection
    RunConfig.from_run_config({"byzantine-selection": selection, "byzantine-ids": " "})


@pytest.mark.parametrize("redundancy", [0.001, 1e-6, 1e-300])
def test_redundancy_too_small_for_a_bernoulli_code_is_refused(redundancy):
    # used to pass validation and fail when the code was built, without naming the key
    with pytest.raises(ValueError, match=r"redundancy r = .* is too small for a Bernoulli code"):
        RunConfig.from_run_config({"redundancy": redundancy})
    # a run that builds no Bernoulli code does not care
    RunConfig.from_run_config({"redundancy": redundancy, "aggregation": "fgm"})
    RunConfig.from_run_config({"redundancy": redundancy, "code": "uncoded"})


@pytest.mark.parametrize("k", [1, 2, 5, 15, 1024])
def test_redundancy_floor_agrees_with_the_bernoulli_factory(k):
    from fl_election import codes
    from fl_election.config import _min_bernoulli_redundancy

    floor = _min_bernoulli_redundancy(k)
    candidates = [floor, f"{floor:g}", 0.001, 0.0009999, 0.0010001, 0.0010004, 0.0010005]
    for r in (float(value) for value in candidates):
        changes = {"num_workers": 2, "num_partitions": k, "byzantine_count": 0}
        changes.update(redundancy=r, batch_size=max(k, 240), code_seed=1)
        try:
            codes.bernoulli(n=2, k=k, redundancy=r, seed=1)
        except ValueError:
            with pytest.raises(ValueError, match="redundancy"):
                RunConfig(**changes)
        else:
            assert RunConfig(**changes).allocation_code().k == k
    # the floor the message advises is itself accepted
    codes.bernoulli(n=2, k=k, redundancy=float(f"{floor:g}"))


@pytest.mark.parametrize("output_dir", ["..", "../outputs", "outputs/../../x", "a/b/../c", "./.."])
def test_relative_output_dir_may_not_climb_out_of_the_output_root(output_dir):
    with pytest.raises(ValueError, match="output-dir must not hold a '..' folder when relative"):
        RunConfig.from_run_config({"output-dir": output_dir})


def test_output_dir_dots_that_stay_inside_or_are_absolute_are_accepted(tmp_path):
    RunConfig(output_dir="outputs/..hidden/run..1")
    RunConfig(output_dir="./outputs/.")
    # an absolute path is the user's explicit choice, '..' or not
    RunConfig(output_dir=str(tmp_path / "a" / ".." / "b"))


@pytest.mark.parametrize("timeout", [1e-9, 0.5, math.nextafter(1.0, 0.0)])
def test_round_timeout_below_one_second_is_refused(timeout):
    with pytest.raises(ValueError, match=r"round-timeout must be a finite number in \[1, 604800\]"):
        RunConfig.from_run_config({"round-timeout": timeout})
    assert config_module.MIN_ROUND_TIMEOUT == 1.0
    RunConfig.from_run_config({"round-timeout": config_module.MIN_ROUND_TIMEOUT})


def shipped_run_configs() -> list[tuple[str, dict]]:
    """Every run config the project ships: conf files, sweep variants, example apps."""
    from fl_election.simulations import head_to_head
    from fl_election.simulations.sweep import load_sweep

    found = [("pyproject.toml", pyproject_defaults())]
    for path in sorted((ROOT / "simulations" / "conf").glob("*.toml")):
        found.append((str(path.relative_to(ROOT)), tomllib.loads(path.read_text())))
    spec = head_to_head.load_spec()
    for profile_name, profile in spec["profiles"].items():
        for point in head_to_head.points(spec):
            if head_to_head._skipped(spec, point) is not None:
                continue
            attacks = {
                *head_to_head.attacks_of(spec, profile, point, tune=True),
                *head_to_head.attacks_of(spec, profile, point, tune=False),
            }
            for attack in sorted(attacks):
                for lr in spec["schemes"][point.scheme]["lr"][
                    :: len(spec["schemes"][point.scheme]["lr"]) - 1
                ]:
                    values = head_to_head.overrides(
                        spec, point, attack, lr, profile["eval-rounds"], profile["eval-milestones"]
                    )
                    found.append(
                        (f"head_to_head.toml:{profile_name}:{point.name}-{attack}", values)
                    )
    for path in sorted((ROOT / "simulations" / "sweeps").glob("*.toml")):
        if path == head_to_head.SPEC:
            continue  # not a sweep.py file: its points are checked above
        sweep = load_sweep(path)
        for name, overrides in sweep["variants"].items():
            found.append((f"{path.relative_to(ROOT)}:{name}", {**sweep["base"], **overrides}))
    for path in sorted((ROOT / "examples").glob("*/pyproject.toml")):
        app = tomllib.loads(path.read_text())["tool"]["flwr"]["app"]
        found.append((str(path.relative_to(ROOT)), app.get("config", {})))
    return found


def test_every_shipped_run_config_validates():
    configs = shipped_run_configs()
    assert len(configs) > 10
    for where, run_config in configs:
        try:
            RunConfig.from_run_config(run_config)
        except ValueError as err:
            pytest.fail(f"{where}: {err}")


def test_the_removed_vote_count_quorum_key_is_refused_with_its_replacement():
    with pytest.raises(ValueError, match="'min-valid-votes' was removed.*crash-budget"):
        RunConfig.from_run_config({"min-valid-votes": 13})


@pytest.mark.parametrize(
    "values, key",
    [
        ({"byzantine-count": 6, "crash-budget": 2}, "byzantine-count \\+ crash-budget"),
        ({"crash-budget": -1}, "crash-budget"),
        ({"fault-rule": "lenient"}, "fault-rule"),
        ({"certify-time-budget": 0.0}, "certify-time-budget"),
        ({"certify-time-budget": float("inf")}, "certify-time-budget"),
        ({"max-resyncs": -1}, "max-resyncs"),
        ({"resync-window": 0}, "resync-window"),
    ],
)
def test_fault_budget_knobs_are_checked_before_round_one(values, key):
    with pytest.raises(ValueError, match=key):
        RunConfig.from_run_config(values)


def test_a_crash_budget_within_half_is_accepted():
    cfg = RunConfig.from_run_config({"byzantine-count": 6, "crash-budget": 1})
    assert cfg.byzantine_count + cfg.crash_budget == 7
