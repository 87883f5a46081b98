"""ServerApp: the ElectionCoding strategy, used like FedAvg."""

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from bcapp.task import Net
from fl_election.codes import deterministic
from fl_election.strategies import ElectionCoding, vote_keys

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Train the app's model with a (5, 1)-tolerant code over five SuperNodes."""
    net, code = Net(), deterministic(5, b=1)
    strategy = ElectionCoding(
        code, byzantine_budget=1, lr=0.01, evaluate_every=10, trainable_keys=vote_keys(net)
    )
    rounds = int(context.run_config["num-server-rounds"])
    strategy.start(grid=grid, initial_arrays=ArrayRecord(net.state_dict()), num_rounds=rounds)
