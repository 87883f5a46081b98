"""The main job through `flwr run .` (Ray simulation), against the in-process grid.

Slow: a full training run on 15 simulated SuperNodes, then the same config in process.
The test owns a private FLWR_HOME, so the SuperLink it makes `flwr run` start is found by
that environment and stopped by pid at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from fl_election.config import RunConfig
from fl_election.simulations.inprocess import run_inprocess

ROOT = Path(__file__).resolve().parents[1]


def processes_with_env(marker: str) -> list[int]:
    """Pids of this user's processes whose environment holds ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def stop(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 15
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.5)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_main_job_via_flwr_run_reaches_target_and_matches_inprocess(tmp_path):
    flwr_home = tmp_path / "flwr-home"
    out = tmp_path / "out"
    env = {
        **os.environ,
        "FLWR_HOME": str(flwr_home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    command = [
        "flwr", "run", ".", "--federation-config", "num-supernodes=15", "--stream",
        "--run-config", f"output-dir='{out}' run-name='main'",
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500
        )
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-4000:]
        result_path = out / "main.json"
        assert result_path.exists(), log[-4000:]
    finally:
        stop([p for p in processes_with_env(f"FLWR_HOME={flwr_home}") if p != os.getpid()])
    assert not [p for p in processes_with_env(f"FLWR_HOME={flwr_home}") if p != os.getpid()]

    record = json.loads(result_path.read_text())
    assert "[ROUND 1/" in log  # progress is shown per round
    cfg = RunConfig.from_run_config(record["config"])
    assert cfg == RunConfig(output_dir=str(out), run_name="main")  # the defaults
    assert record["final"]["test-accuracy"] >= 0.88, record["final"]

    # the same config in process gives the same model, bit for bit
    again = run_inprocess(cfg.replace(output_dir=str(tmp_path / "inprocess")))
    assert again["final"] == record["final"]
    ray_model = np.load(out / "main.model.npz")
    local_model = np.load(tmp_path / "inprocess" / "main.model.npz")
    assert ray_model.files == local_model.files
    for key in ray_model.files:
        np.testing.assert_array_equal(ray_model[key], local_model[key])

    # uncoded SignSGD-MV under the same attack ends far lower
    uncoded = run_inprocess(cfg.replace(code="uncoded", output_dir=str(tmp_path / "uncoded")))
    assert uncoded["final"]["test-accuracy"] <= record["final"]["test-accuracy"] - 0.15
