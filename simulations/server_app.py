"""The ServerApp of ``flwr run .``: one election-coding experiment from the run config."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fl_election.config import RunConfig
from fl_election.simulations.experiment import run_experiment

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Validate the run config (a bad value stops here, before training) and train."""
    cfg = RunConfig.from_run_config(context.run_config)
    run_experiment(grid, cfg)
