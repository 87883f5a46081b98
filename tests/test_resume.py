"""Checkpoint and resume: a run killed mid-way (SIGKILL) and resumed ends bit-identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fl_election.config import RunConfig
from fl_election.simulations.checkpoint import checkpoint_path, read_checkpoint
from fl_election.simulations.inprocess import run_inprocess

SETTINGS = {
    "num-server-rounds": 150,
    "num-workers": 5,
    "byzantine-count": 1,
    "attack": "reverse",
    "code": "deterministic",
    "batch-size": 60,
    "lr": 0.01,
    "lr-milestones": "40,120",
    "eval-every": 25,
    "checkpoint-every": 3,
    "run-name": "run",
}


def overrides(settings: dict[str, object]) -> list[str]:
    return [
        f"{k}={json.dumps(v) if isinstance(v, str) else str(v).lower()}"
        for k, v in settings.items()
    ]


def test_a_killed_run_resumes_to_the_bit_identical_model(tmp_path: Path) -> None:
    folder = tmp_path / "killed"
    settings = {**SETTINGS, "output-dir": str(folder)}
    command = [sys.executable, "-m", "fl_election.simulations.inprocess", *overrides(settings)]
    ckpt = checkpoint_path(folder, "run")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None:
            if ckpt.exists() and read_checkpoint(ckpt).round >= 6:
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it was killed"
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = read_checkpoint(ckpt).round
    assert 6 <= killed_at < 150
    assert not (folder / "run.json").exists()  # nothing final was written

    resumed = run_inprocess(RunConfig.from_run_config({**settings, "resume": True}))
    unbroken = run_inprocess(
        RunConfig.from_run_config({**SETTINGS, "output-dir": str(tmp_path / "unbroken")})
    )
    a = np.load(folder / "run.model.npz")
    b = np.load(tmp_path / "unbroken" / "run.model.npz")
    assert a.files == b.files
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    assert resumed["final"] == unbroken["final"]
    # what a resumed run sends differs in its first round (every node gets the full model)
    # the resumed round resends the model: its bytes differ from the unbroken run's
    ignored = ("compute-time", "downlink-bytes", "wire-down-bytes", "wire-up-bytes")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ignored} for r in rows]  # noqa: E731
    assert strip(resumed["rounds"]) == strip(unbroken["rounds"])


def test_a_checkpoint_of_another_config_is_refused(tmp_path: Path) -> None:
    settings = {**SETTINGS, "num-server-rounds": 6, "output-dir": str(tmp_path)}
    run_inprocess(RunConfig.from_run_config(settings))
    assert read_checkpoint(checkpoint_path(tmp_path, "run")).round == 6
    other = {**settings, "lr": 0.02, "resume": True}
    try:
        run_inprocess(RunConfig.from_run_config(other))
    except ValueError as err:
        assert "another configuration" in str(err)
    else:
        raise AssertionError("a checkpoint of another config was resumed")
    # the same config with more rounds extends the run
    longer = run_inprocess(
        RunConfig.from_run_config({**settings, "num-server-rounds": 9, "resume": True})
    )
    assert len(longer["rounds"]) == 9 and longer["rounds"][0]["round"] == 1
