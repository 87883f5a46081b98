"""Downlink bytes when Byzantine nodes keep asking for the full model (issue 13, item 3).

The main job's model and code (digits MLP, n = 15, Bernoulli r = 3, b = 6, vote downlink),
no vote attack; the first six nodes ask for the full model every round: three report
another model's fingerprint with an otherwise valid vote, three answer ``resync``. Prints one
markdown row per setting (honest; the default ``max-resyncs = 2`` per ``resync-window = 50``;
no limit) with the mean downlink bytes per round after round 1 and the factor over honest::

    python benchmarks/bench_resync_abuse.py            # 100 rounds each
    python benchmarks/bench_resync_abuse.py --rounds 20
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

from flwr.app import Context, Error, Message

from fl_election import contract
from fl_election.config import RunConfig
from fl_election.simulations.experiment import run_experiment
from fl_election.simulations.inprocess import InProcessGrid

ABUSERS = 6


def run(rounds: int, abusers: int, max_resyncs: int, folder: str) -> dict[str, Any]:
    """Run the main job's config for ``rounds`` rounds with ``abusers`` resync abusers."""
    from fl_election.clients.client_app import app as client_app

    cfg = RunConfig(
        num_server_rounds=rounds,
        attack="none",
        eval_every=rounds,
        checkpoint_every=0,
        max_resyncs=max_resyncs,
        output_dir=folder,
        run_name=f"abuse-{abusers}-{max_resyncs}",
    )
    grid = InProcessGrid(client_app, cfg.num_workers, cfg.to_run_config())
    liars = set(sorted(grid.contexts)[:abusers])

    def app(message: Message, context: Context) -> Message:
        reply = client_app(message, context)
        if context.node_id not in liars or reply.has_error():
            return reply
        if context.node_id % 2:
            return Message(Error(contract.RESYNC_ERROR_CODE, "out of step"), reply_to=message)
        metrics = reply.content.metric_records[contract.METRICS]
        key = contract.METRIC_MODEL_FINGERPRINT
        metrics[key] = int(metrics[key]) ^ 1  # another model than the one sent
        return reply

    grid.client_app = app  # type: ignore[assignment]
    return run_experiment(grid, cfg)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        settings = [("honest", 0, 2), ("6 abusers, max-resyncs 2 / 50 rounds", ABUSERS, 2)]
        settings.append(("6 abusers, no limit", ABUSERS, 10**6))
        for label, abusers, limit in settings:
            record = run(args.rounds, abusers, limit, folder)
            later = [r["downlink-bytes"] for r in record["rounds"][1:]]
            applied = sum(r["audit"]["applied"] for r in record["rounds"])
            resent = sum(len(r["audit"]["resynced"]) for r in record["rounds"])
            rows.append((label, sum(later) / len(later), applied, resent))
    honest = rows[0][1]
    print(f"main job config, {args.rounds} rounds; downlink bytes per round after round 1")
    print("| run | KiB per round | x honest | rounds applied | full models resent |")
    print("|---|---:|---:|---:|---:|")
    for label, mean, applied, resent in rows:
        print(
            f"| {label} | {mean / 1024:.1f} | {mean / honest:.1f} | "
            f"{applied}/{args.rounds} | {resent} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
