"""The outside example through `flwr run` (Ray simulation): the app pickles and trains."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from test_flwr_run import processes_with_env, stop

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "breast-cancer"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_example_runs_under_flwr_run(tmp_path: Path) -> None:
    flwr_home = tmp_path / "flwr-home"
    env = {
        **os.environ,
        "FLWR_HOME": str(flwr_home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    command = [
        "flwr", "run", str(EXAMPLE), "--federation-config", "num-supernodes=5", "--stream",
        "--run-config", "num-server-rounds=20",
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1000
        )
    finally:
        stop([p for p in processes_with_env(f"FLWR_HOME={flwr_home}") if p != os.getpid()])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Rejected reply" not in log, log[-4000:]
    accuracies = [float(a) for a in re.findall(r"'test-accuracy': '([0-9.e+-]+)'", log)]
    assert accuracies and accuracies[-1] >= 0.9, log[-4000:]
