"""ServerApp: the ElectionCoding strategy, with the model's tied weights declared."""

import torch
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from fl_election.codes import deterministic
from fl_election.strategies import ElectionCoding, tied_keys, vote_keys
from seqapp.task import Net

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Train the app's model with a (5, 1)-tolerant code over five SuperNodes."""
    torch.manual_seed(0)
    net, code = Net(), deterministic(5, b=1)
    strategy = ElectionCoding(
        code,
        byzantine_budget=1,
        lr=0.003,
        evaluate_every=10,
        batch_size=250,
        trainable_keys=vote_keys(net),
        tied_keys=tied_keys(net),
    )
    rounds = int(context.run_config["num-server-rounds"])
    strategy.start(grid=grid, initial_arrays=ArrayRecord(net.state_dict()), num_rounds=rounds)
