"""Bytes per training step in both directions: election coding against FedAvg and Krum.

For each model (the main job's MLP on 8x8 digits, the paper's ResNet-18 on CIFAR-shaped
inputs) and ``n = 15`` nodes, every message is a real one:

- **Election coding** (the main job's strategy, :func:`fl_election.simulations.experiment.
  build_strategy` with the default :class:`~fl_election.config.RunConfig`: Bernoulli code,
  k = 5, ``tie_rule = "gradient"``): ``configure_train`` builds the train messages, the
  in-process grid delivers them to this project's ClientApp (:func:`fl_election.clients.
  coded_client_app`, i.e. :func:`~fl_election.clients.coded_train`, a real forward and
  backward pass on random tensors), and the replies go back through ``aggregate_train``.
  Round 1 sends the full model; round 2 (``downlink = "vote"``) sends every node that
  reported last round's fingerprint only the ``update`` (last round's elected direction,
  one sign plane, and the batch-norm buffers): that is the steady state. Round 3 loses one
  node's reply, so round 4 sends that node the full model and the momentum (a resync).
  ``downlink = "full"`` (stateless clients) is measured the same way.
- **FedAvg and Krum** (:class:`flwr.serverapp.strategy.FedAvg` / ``Krum``): their own
  ``configure_train`` on a grid of the same 15 node ids builds the messages (the float32
  state dict, ``ArrayRecord(model.state_dict())``); each reply is what Flower's PyTorch
  app template sends back after local training (one real local SGD step here): the
  state dict and a ``MetricRecord`` of ``train_loss`` and ``num-examples``; the strategy's
  ``aggregate_train`` accepts them.

A message's size is ``len(flwr.common.serde.message_to_proto(msg).SerializeToString())``:
the whole message (metadata, config, metrics, every array with its ``.npy`` header). The
last table also gives Flower 1.41's own transport, which pushes a message as content-
addressed objects (``get_all_nested_objects``; the unique objects' ``deflate()`` bytes).

Example::

    .venv/bin/python benchmarks/bench_traffic.py
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.serde import message_to_proto
from flwr.serverapp.strategy import FedAvg, Krum
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from torch import nn

from fl_election import contract
from fl_election.clients import coded_client_app
from fl_election.config import RunConfig
from fl_election.contract import vote_keys
from fl_election.models import create_model
from fl_election.simulations.experiment import build_strategy
from fl_election.simulations.flower_seam import set_message_id
from fl_election.simulations.inprocess import InProcessGrid

NUM_NODES = 15
NUM_CLASSES = 10

#: name, model, input shape, global batch B (the MLP's is the main job's; ResNet-18's is
#: kept small for a CPU: message sizes do not depend on it), random training samples.
SETUPS = {
    "mlp": ("MLP (digits 8x8)", "mlp", (1, 8, 8), 240, 1200),
    "resnet18": ("ResNet-18 (3x32x32)", "resnet18", (3, 32, 32), 20, 100),
}


def wire_bytes(message: Message) -> int:
    """Bytes of the message's protobuf form (what one message weighs on the wire)."""
    return len(message_to_proto(message).SerializeToString())


def object_bytes(message: Message) -> int:
    """Bytes Flower 1.41's transport pushes for the message: its unique deflated objects."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(message).values())


def data_bytes(message: Message, record: str, key: str | None = None) -> int:
    """Bytes of the arrays (``.npy`` form, header included) of one ArrayRecord."""
    if record not in message.content.array_records:
        return 0
    arrays = message.content.array_records[record]
    return sum(len(a.data) for k, a in arrays.items() if key is None or k == key)


def random_data(input_shape: tuple[int, ...], samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, *input_shape, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (samples,), generator=generator)
    return x, y


@dataclass
class Traffic:
    """Bytes of one scheme on one model, all nodes together."""

    up: int  # replies of a steady-state step, all nodes
    down: int  # train messages of a steady-state step, all nodes
    first_down: int  # round 1's train messages (full model)
    up_objects: int
    down_objects: int
    nodes: int
    details: dict[str, float]


def election_traffic(setup: tuple, downlink: str) -> Traffic:
    _, name, shape, batch, samples = setup
    model = create_model(name, shape, NUM_CLASSES)
    cfg = RunConfig(batch_size=batch, downlink=downlink)
    assert cfg.num_workers == NUM_NODES
    strategy = build_strategy(cfg, vote_keys(model))
    app = coded_client_app(
        create_model(name, shape, NUM_CLASSES),
        nn.functional.cross_entropy,
        random_data(shape, samples),
        device="cpu",
    )
    grid = InProcessGrid(app, NUM_NODES, {})
    arrays = ArrayRecord(model.state_dict())
    sent: dict[int, list[Message]] = {}
    received: dict[int, list[Message]] = {}
    metrics: dict[int, MetricRecord] = {}
    vote_mode = downlink == contract.DOWNLINK_VOTE
    for server_round in (1, 2, 3) if vote_mode else (1, 2):
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        replies = list(grid.send_and_receive(messages))
        errors = [r.error.reason for r in replies if r.has_error()]
        assert not errors, errors
        sent[server_round], received[server_round] = messages, replies
        if server_round == 3:  # one reply lost: that node gets a full message next round
            replies = replies[1:]
        new, record = strategy.aggregate_train(server_round, replies)
        assert new is not None and record is not None and record["applied"] == 1
        arrays, metrics[server_round] = new, record
    steady, replies = sent[2], received[2]
    d = strategy.num_coordinates
    if vote_mode:
        assert all(
            contract.UPDATE in m.content and contract.ARRAYS not in m.content for m in steady
        )
        resync = list(strategy.configure_train(4, arrays, ConfigRecord(), grid))
        full = [m for m in resync if contract.ARRAYS in m.content]
        assert len(full) == 1 and contract.MOMENTUM in full[0].content
        set_message_id(full[0])
    assert all(contract.ARRAYS in m.content and contract.UPDATE not in m.content for m in sent[1])
    assert all(set(r.content.array_records[contract.VOTE]) == {"signs"} for r in replies)
    up = [wire_bytes(r) for r in replies]
    down = [wire_bytes(m) for m in steady]
    first = [wire_bytes(m) for m in sent[1]]
    details: dict[str, float] = {
        "d": d,
        "reply": np.mean(up),
        "reply-signs": np.mean([data_bytes(r, contract.VOTE) for r in replies]),
        "reply-buffers": np.mean([data_bytes(r, contract.BUFFERS) for r in replies]),
        "message": np.mean(down),
        "message-signs": np.mean([data_bytes(m, contract.UPDATE, "signs") for m in steady]),
        "message-buffers": np.mean(
            [
                data_bytes(m, contract.UPDATE) - data_bytes(m, contract.UPDATE, "signs")
                for m in steady
            ]
        ),
        "first-message": np.mean(first),
        "uplink-bits-per-coordinate": float(metrics[2]["uplink-bits-per-coordinate"]),
        "strategy-uplink-bytes": int(metrics[2]["uplink-bytes"]),
        "strategy-downlink-bytes": int(metrics[2]["downlink-bytes"]),
    }
    if vote_mode:
        details["resync-message"] = wire_bytes(full[0])
    return Traffic(
        up=sum(up),
        down=sum(down),
        first_down=sum(first),
        up_objects=sum(object_bytes(r) for r in replies),
        down_objects=sum(object_bytes(m) for m in steady),
        nodes=len(steady),
        details=details,
    )


class FakeGrid:
    """Just enough of a Grid for a strategy's configure_train: the node ids."""

    def get_node_ids(self) -> list[int]:
        return list(range(1000, 1000 + NUM_NODES))


def template_client(
    message: Message, model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> Message:
    """Flower's PyTorch template ClientApp: load, train locally, reply the state dict."""
    model.load_state_dict(message.content["arrays"].to_torch_state_dict())
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=float(message.content["config"]["lr"]))
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"train_loss": loss.item(), "num-examples": len(y)}),
        }
    )
    reply = Message(content=content, reply_to=message)
    set_message_id(reply)
    return reply


def float_traffic(setup: tuple, strategy: FedAvg) -> Traffic:
    _, name, shape, batch, samples = setup
    model = create_model(name, shape, NUM_CLASSES)
    x, y = random_data(shape, samples)
    x, y = x[: batch // 5], y[: batch // 5]
    arrays = ArrayRecord(model.state_dict())
    messages = list(strategy.configure_train(1, arrays, ConfigRecord({"lr": 0.01}), FakeGrid()))
    for message in messages:
        set_message_id(message)
    replies = [template_client(m, model, x, y) for m in messages]
    new, _ = strategy.aggregate_train(1, replies)
    assert new is not None
    down = sum(wire_bytes(m) for m in messages)
    d = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Traffic(
        up=sum(wire_bytes(r) for r in replies),
        down=down,
        first_down=down,
        up_objects=sum(object_bytes(r) for r in replies),
        down_objects=sum(object_bytes(m) for m in messages),
        nodes=len(messages),
        details={"d": d, "message": down / len(messages)},
    )


SCHEMES = (
    "election coding (downlink vote)",
    "election coding (downlink full)",
    "FedAvg",
    "Krum",
)


def measure(setup: tuple, scheme: str) -> Traffic:
    """Return the traffic of one of :data:`SCHEMES` on one model."""
    if scheme.startswith("election coding"):
        return election_traffic(setup, scheme.split()[-1].rstrip(")"))
    if scheme == "FedAvg":
        return float_traffic(
            setup, FedAvg(min_train_nodes=NUM_NODES, min_available_nodes=NUM_NODES)
        )
    # Krum's messages are FedAvg's; b = 6 as in the main job
    krum = Krum(min_train_nodes=NUM_NODES, min_available_nodes=NUM_NODES, num_malicious_nodes=6)
    return float_traffic(setup, krum)


def mb(num_bytes: float) -> str:
    return f"{num_bytes / 1e6:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(SETUPS), default=list(SETUPS))
    parser.add_argument("--rounds", type=int, default=150, help="run length for amortising")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    started = time.perf_counter()
    results: dict[str, dict[str, Traffic]] = {}
    for key in args.models:
        setup = SETUPS[key]
        results[key] = {}
        for scheme in SCHEMES:
            begin = time.perf_counter()
            results[key][scheme] = measure(setup, scheme)
            print(f"{key}, {scheme}: {time.perf_counter() - begin:.1f} s", file=sys.stderr)

    print(
        f"n = {NUM_NODES} nodes; Python {platform.python_version()}, torch {torch.__version__}, "
        f"flwr {version('flwr')}; {time.perf_counter() - started:.0f} s\n"
    )
    print("Bytes per step (steady state), protobuf size of every message, all 15 nodes:\n")
    print(
        "| model | d | scheme | uplink MB/step | downlink MB/step | total MB/step "
        "| total bytes/step | FedAvg / scheme |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for key, schemes in results.items():
        label = SETUPS[key][0]
        fedavg = schemes["FedAvg"]
        for scheme, t in schemes.items():
            total = t.up + t.down
            print(
                f"| {label} | {int(t.details['d']):,} | {scheme} | {mb(t.up)} | {mb(t.down)} "
                f"| {mb(total)} | {total:,} | {(fedavg.up + fedavg.down) / total:.1f}x |"
            )

    print("\nElection coding (downlink vote), per message, bytes:\n")
    print(
        "| model | vote reply (sign plane + BN buffers + rest) | update message "
        "(sign plane + BN buffers + rest) | uplink bits/coord (strategy metric) "
        f"| round-1 downlink, 15 full models | resync message (model + momentum) "
        f"| downlink/step over {args.rounds} rounds |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    for key, schemes in results.items():
        t = schemes["election coding (downlink vote)"]
        v = t.details
        rest_up = v["reply"] - v["reply-signs"] - v["reply-buffers"]
        rest_down = v["message"] - v["message-signs"] - v["message-buffers"]
        amortised = (t.first_down + (args.rounds - 1) * t.down) / args.rounds
        print(
            f"| {SETUPS[key][0]} | {v['reply']:,.0f} ({v['reply-signs']:,.0f} + "
            f"{v['reply-buffers']:,.0f} + {rest_up:,.0f}) | {v['message']:,.0f} "
            f"({v['message-signs']:,.0f} + {v['message-buffers']:,.0f} + {rest_down:,.0f}) "
            f"| {v['uplink-bits-per-coordinate']:.4f} | {t.first_down:,} ({mb(t.first_down)} MB) "
            f"| {int(v['resync-message']):,} | {amortised:,.0f} ({mb(amortised)} MB) |"
        )

    print("\nCross-checks: the strategy's own byte metrics and Flower 1.41's object transport:\n")
    print(
        "| model | scheme | strategy uplink-bytes (array data) | strategy downlink-bytes "
        "| object transport up + down | protobuf up + down |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for key, schemes in results.items():
        for scheme, t in schemes.items():
            v = t.details
            up = f"{int(v['strategy-uplink-bytes']):,}" if "strategy-uplink-bytes" in v else "-"
            down = (
                f"{int(v['strategy-downlink-bytes']):,}" if "strategy-downlink-bytes" in v else "-"
            )
            print(
                f"| {SETUPS[key][0]} | {scheme} | {up} | {down} "
                f"| {t.up_objects + t.down_objects:,} | {t.up + t.down:,} |"
            )


if __name__ == "__main__":
    main()
