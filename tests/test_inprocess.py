"""The in-process grid and its seam to Flower internals, checked against the installed Flower."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fl_election.simulations.flower_seam import (
    SERVER_NODE_ID,
    empty_run,
    set_message_id,
    stamp_server_identity,
    wire_copy,
)
from fl_election.simulations.inprocess import CLIENT_EXCEPTION_CODE, InProcessGrid, run_apps


def a_message() -> Message:
    content = RecordDict(
        {"arrays": ArrayRecord({"w": Array(np.arange(4, dtype=np.float32))}),
         "config": ConfigRecord({"k": [1, 2]})}
    )  # fmt: skip
    return Message(content=content, message_type=MessageType.TRAIN, dst_node_id=7)


def test_server_identity_and_message_ids():
    stamp_server_identity(run_id=42)
    message = a_message()
    assert message.metadata.src_node_id == SERVER_NODE_ID
    assert message.metadata.run_id == 42
    first = set_message_id(message)
    assert message.metadata.message_id == first
    assert set_message_id(message) != first
    assert empty_run(42).run_id == 42


def test_wire_copy_is_equal_and_independent():
    stamp_server_identity(run_id=1)
    message = a_message()
    set_message_id(message)
    copy = wire_copy(message)
    assert copy.metadata.message_id == message.metadata.message_id
    np.testing.assert_array_equal(copy.content["arrays"]["w"].numpy(), np.arange(4))
    copy.content["config"]["k"] = [9]
    copy.content["arrays"]["w"] = Array(np.zeros(4, dtype=np.float32))
    assert list(message.content["config"]["k"]) == [1, 2]
    np.testing.assert_array_equal(message.content["arrays"]["w"].numpy(), np.arange(4))


def test_run_apps_runs_any_serverapp_and_clientapp_pair():
    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        if context.node_config.get("broken"):
            raise RuntimeError("boom")
        value = int(msg.content["config"]["x"]) + context.node_id
        return Message(RecordDict({"out": ConfigRecord({"v": value})}), reply_to=msg)

    server = ServerApp()
    seen: list[object] = []

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        messages = [
            Message(RecordDict({"config": ConfigRecord({"x": 1})}), node, MessageType.TRAIN)
            for node in grid.get_node_ids()
        ]
        for reply in grid.send_and_receive(messages):
            seen.append(reply.error.code if reply.has_error() else reply.content["out"]["v"])
        seen.append(context.run_config["rounds"])

    run_apps(server, client, 3, {"rounds": 2}, [{}, {"broken": True}, {}])
    assert seen == [1001, CLIENT_EXCEPTION_CODE, 1003, 2]


def test_grid_lists_its_nodes():
    grid = InProcessGrid(ClientApp(), 4, {})
    assert list(grid.get_node_ids()) == [1000, 1001, 1002, 1003]
