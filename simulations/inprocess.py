"""An in-process Flower Grid: the same ServerApp logic and ClientApp, no Ray, no SuperLink.

Messages are delivered by calling the :class:`~flwr.clientapp.ClientApp` directly, one node
after the other, each with its own :class:`~flwr.app.Context`. Every message makes a round
trip through its protobuf form on the way in and out, as on the wire, so a mod that edits a
message cannot reach into the server's records. What it needs from Flower's internals is
in :mod:`fl_election.simulations.flower_seam`. Used by the tests and by fast sweeps; a slow
test checks that it trains the same model as the Ray simulation for the same seed.
"""

from __future__ import annotations

import gc
import traceback
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fl_election.config import ConfigValue, RunConfig, parse_run_config_overrides

from .flower_seam import (
    SERVER_NODE_ID,
    Run,
    empty_run,
    set_message_id,
    stamp_server_identity,
    wire_copy_sized,
)

#: Error code of a reply standing for an exception raised inside the ClientApp.
CLIENT_EXCEPTION_CODE = 4200


class InProcessGrid(Grid):
    """A Grid whose nodes are ClientApp calls in this process.

    Parameters
    ----------
    client_app : ClientApp
        The app every node runs.
    num_nodes : int
        Number of nodes.
    run_config : Mapping[str, bool | int | float | str]
        The run config every node sees (``context.run_config``).
    node_configs : Sequence[Mapping[str, bool | int | float | str]] | None (default: None)
        Per-node ``node_config``; defaults to ``partition-id`` / ``num-partitions`` as in
        Flower's simulation.
    run_id : int (default: 1)
        Run id stamped on messages.
    """

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        run_config: Mapping[str, ConfigValue],
        node_configs: Sequence[Mapping[str, ConfigValue]] | None = None,
        run_id: int = 1,
    ) -> None:
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
        if node_configs is not None and len(node_configs) != num_nodes:
            raise ValueError("node_configs must hold one mapping per node")
        self.client_app = client_app
        self._run = empty_run(run_id)
        # Messages stamp the sender's identity; in a real deployment the runtime sets it.
        stamp_server_identity(run_id)
        self._replies: dict[str, Message] = {}
        #: Serialized bytes of every push (one per round and message type): the protobuf
        #: messages as they travel, both directions, ``{"type", "down", "up"}``.
        self.traffic: list[dict[str, Any]] = []
        self.contexts: dict[int, Context] = {}
        for i in range(num_nodes):
            node_id = 1000 + i
            node_config = dict(
                node_configs[i]
                if node_configs
                else {"partition-id": i, "num-partitions": num_nodes}
            )
            self.contexts[node_id] = Context(
                run_id=run_id,
                node_id=node_id,
                node_config=node_config,
                state=RecordDict(),
                run_config=dict(run_config),
            )

    def set_run(self, run: Run) -> None:
        """Set the run this grid operates in."""
        self._run = run

    @property
    def run(self) -> Run:
        """Run information."""
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Create a message for a node."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """Return the node ids."""
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message to its node now and keep the reply for pulling."""
        ids = []
        pushed: dict[str, Any] = {"type": "", "down": 0, "up": 0}
        for message in messages:
            message_id = set_message_id(message)
            node_id = message.metadata.dst_node_id
            if node_id not in self.contexts:
                raise ValueError(f"no node with id {node_id}")
            delivered, size = wire_copy_sized(message)
            pushed["type"] = message.metadata.message_type
            pushed["down"] += size
            try:
                reply = self.client_app(delivered, self.contexts[node_id])
            except Exception as err:  # noqa: BLE001 - a crashing node must not stop the run
                reason = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"
                reply = Message(Error(code=CLIENT_EXCEPTION_CODE, reason=reason), reply_to=message)
            set_message_id(reply)
            self._replies[message_id], size = wire_copy_sized(reply)
            pushed["up"] += size
            ids.append(message_id)
        if ids:
            self.traffic.append(pushed)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Return (and forget) the replies to the given messages."""
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Deliver the messages and return every reply (delivery is synchronous)."""
        replies = self.pull_messages(self.push_messages(messages))
        # Flower's ArrayRecord.to_numpy_ndarrays(keep_input=False) runs gc.collect() once
        # per reply (Krum, Bulyan); with torch loaded each call walks every live object.
        # Freezing what exists now lets those calls walk only the round's new objects.
        gc.collect()
        gc.freeze()
        return replies


def run_apps(
    server_app: ServerApp,
    client_app: ClientApp,
    num_nodes: int,
    run_config: Mapping[str, ConfigValue],
    node_configs: Sequence[Mapping[str, ConfigValue]] | None = None,
) -> InProcessGrid:
    """Run any ServerApp against ``num_nodes`` copies of any ClientApp, in this process.

    Parameters
    ----------
    server_app : ServerApp
        The server side (its ``@app.main()`` function runs with the grid).
    client_app : ClientApp
        What every node runs.
    num_nodes : int
        Number of nodes.
    run_config : Mapping[str, bool | int | float | str]
        The run config both sides see.
    node_configs : Sequence[Mapping[str, bool | int | float | str]] | None (default: None)
        Per-node node configs.

    Returns
    -------
    InProcessGrid
        The grid, whose node contexts hold each node's state after the run.
    """
    grid = InProcessGrid(client_app, num_nodes, run_config, node_configs=node_configs)
    context = Context(
        run_id=grid.run.run_id,
        node_id=SERVER_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=dict(run_config),
    )
    server_app(grid, context)
    return grid


def run_inprocess(cfg: RunConfig) -> dict[str, Any]:
    """Run one experiment on an :class:`InProcessGrid` and return its JSON result."""
    from fl_election.clients.client_app import app as client_app
    from fl_election.simulations.experiment import run_experiment

    grid = InProcessGrid(client_app, cfg.num_workers, cfg.to_run_config())
    try:
        return run_experiment(grid, cfg, traffic=grid.traffic)
    finally:
        gc.unfreeze()  # what the grid froze is collectable again once the run is over
        gc.collect()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one experiment in process: ``python -m fl_election.simulations.inprocess k=v ...``.

    Each argument is one run-config override in TOML syntax (``code='uncoded'``,
    ``num-server-rounds=20``, ``resume=true``); the rest are the defaults. A key given twice,
    an unknown or snake_case key, or an invalid setting is a usage error (exit status 2)
    that names the key, before anything runs.
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("overrides", nargs="*", help="run-config overrides, key=value (TOML)")
    args = parser.parse_args(argv)
    try:
        cfg = RunConfig.from_run_config(parse_run_config_overrides(args.overrides))
    except ValueError as err:
        parser.error(str(err))
    run_inprocess(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
