"""The one place where the in-process grid touches Flower internals.

:class:`~fl_election.simulations.inprocess.InProcessGrid` plays the SuperLink's part: it
gives messages their ids, stamps the server's identity on them, and carries them to the
nodes and back. Flower has no public API for that (its own ``InMemoryGrid`` does the same
things the same way), so every such call lives here, and ``tests/test_inprocess.py``
checks each of them against the installed Flower, so that an upgrade that moves one
fails there, by name, and not somewhere in a training run.
"""

from __future__ import annotations

from uuid import uuid4

from flwr.app import Message
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

__all__ = [
    "SERVER_NODE_ID",
    "Run",
    "empty_run",
    "set_message_id",
    "stamp_server_identity",
    "wire_copy",
    "wire_copy_sized",
]

#: The node id of the server side of a run.
SERVER_NODE_ID: int = SUPERLINK_NODE_ID


def stamp_server_identity(run_id: int) -> None:
    """Make messages created in this process carry the server's identity for ``run_id``.

    The runtime does this in ``flwr run`` and in a deployment; Flower's ``Message`` reads
    it when it is built.
    """
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SERVER_NODE_ID


def empty_run(run_id: int) -> Run:
    """Return the run record a grid reports (``Grid.run``)."""
    return Run.create_empty(run_id)


def set_message_id(message: Message) -> str:
    """Give ``message`` a fresh id, as the SuperLink does on receipt; return it."""
    message_id = str(uuid4())
    message.metadata.__dict__["_message_id"] = message_id
    return message_id


def wire_copy(message: Message) -> Message:
    """Return ``message`` after a round trip through its protobuf form (what travels).

    Nothing the receiver does to the copy reaches the sender's records, and content that
    Flower could not serialize fails here as it would on the wire.
    """
    return message_from_proto(message_to_proto(message))


def wire_copy_sized(message: Message) -> tuple[Message, int]:
    """Return :func:`wire_copy` of ``message`` and its serialized size in bytes."""
    proto = message_to_proto(message)
    return message_from_proto(proto), proto.ByteSize()
