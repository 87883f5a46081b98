"""Time the main job end to end: `scripts/simulate` (flwr run ., 15 SuperNodes, Ray).

Prints the wall time of the whole command (SuperLink start, Ray start, 150 rounds, outputs),
the ServerApp's own training time, the per-round time and the final accuracy, as one
markdown row for BENCHMARKS.md::

    python benchmarks/bench_main_job.py            # the defaults
    python benchmarks/bench_main_job.py --run-config "code='uncoded'"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-config", default="", help="extra flwr --run-config overrides")
    args = parser.parse_args()
    name = f"bench-main-{int(time.time())}"
    overrides = f"run-name='{name}' {args.run_config}".strip()
    started = time.perf_counter()
    proc = subprocess.run(
        [str(ROOT / "scripts" / "simulate"), "--run-config", overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    record = json.loads((ROOT / "outputs" / f"{name}.json").read_text())
    rounds = record["config"]["num-server-rounds"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print("| command | rounds | wall (s) | ServerApp training (s) | s / round | final accuracy |")
    print("|---|---:|---:|---:|---:|---:|")
    command = "scripts/simulate" + (f" --run-config {args.run_config!r}" if args.run_config else "")
    print(
        f"| `{command}` "
        f"| {rounds} | {wall:.0f} | {record['wall_seconds']:.0f} | "
        f"{record['wall_seconds'] / rounds:.2f} | {record['final']['test-accuracy']:.4f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
