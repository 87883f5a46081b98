"""Per-round time of colluding omniscient Byzantines as n grows: shared against unshared.

For each ``n`` (default 15, 31, 63, 127) the main job's setup scaled up: digits, the MLP,
``b = floor(0.4 n)`` Byzantine rows (``byzantine-selection = "random"``) running the
``omniscient`` attack, a Bernoulli code with ``k = n`` partitions (``num-partitions = 0``)
and redundancy 3, one fixed global batch ``B = 254`` (``2 * 127``: at ``n = 127`` every
partition slice holds 2 samples, at ``n = 15`` it holds 16). Each run goes through
:func:`fl_election.simulations.experiment.run_experiment` on an
:class:`~fl_election.simulations.inprocess.InProcessGrid` (one process, the project's own
ClientApp, one torch thread), twice:

- **shared** (the default): the ``b`` Byzantines of the process compute every partition's
  gradient signs once per step (``fl_election.clients.coded._everyone`` caches them in
  ``_SHARED``);
- **unshared**: ``_everyone`` is wrapped so that ``_SHARED`` is cleared after every call,
  i.e. every Byzantine recomputes the ``k`` partitions (the behaviour before the cache).

A round's time is that of the grid's ``send_and_receive`` for the round's train messages:
all ``n`` ClientApp calls, each with its wire copies (the server's vote and update are not
in it; the MLP's are negligible), as wall time and as the process's CPU time (which leaves
out time spent waiting for a core on a shared machine). Round 1 (full-model downlink,
warm-up) is left out; the table gives the mean of rounds 2 to ``--rounds``. Gradients are
counted by wrapping ``partition_signs`` / ``partition_gradients`` in
``fl_election.clients.coded``: one per row of their ``batches`` argument, per round (the
same every round). The expected count is ``sum(loads) + k`` shared and ``sum(loads) + b k``
unshared, where ``sum(loads)`` (every worker's own partitions, Byzantines included) is
about ``r n``. The script checks that the counts match and that both modes train the same
model (equal final accuracy).

Example::

    PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/bench_scaling.py --sizes 15,31,63,127
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import torch
from flwr.app import MessageType
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from fl_election.clients import coded
from fl_election.clients.client_app import app as client_app
from fl_election.config import RunConfig
from fl_election.simulations.experiment import run_experiment
from fl_election.simulations.inprocess import InProcessGrid

BATCH_SIZE = 254  # 2 * 127: every slice holds >= 2 samples up to n = 127
REDUNDANCY = 3.0
BYZANTINE_FRACTION = 0.4
MODES = ("shared", "unshared")


@dataclass
class Measured:
    """One run: per-round times and gradient counts, the final accuracy."""

    seconds: list[float]  # wall time per round, round 1 first
    cpu: list[float]  # process CPU time per round
    gradients: list[int]  # partition gradients computed per round
    accuracy: float


class CountingGrid(InProcessGrid):
    """An in-process grid that times each round's train round trip and counts gradients."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seconds: list[float] = []
        self.cpu: list[float] = []
        self.gradients: list[int] = []
        self.counter = 0

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        """Deliver the round's messages; record the time and the gradients of train rounds."""
        messages = list(messages)
        self.counter = 0
        start_cpu = time.process_time()
        start = time.perf_counter()
        replies = list(super().send_and_receive(messages, timeout=timeout))
        if any(m.metadata.message_type == MessageType.TRAIN for m in messages):
            self.seconds.append(time.perf_counter() - start)
            self.cpu.append(time.process_time() - start_cpu)
            self.gradients.append(self.counter)
        errors = [r.error.reason for r in replies if r.has_error()]
        if errors:
            raise RuntimeError(f"{len(errors)} node(s) failed: {errors[0]}")
        return replies


@contextlib.contextmanager
def patched(grid: CountingGrid, mode: str) -> Iterator[None]:
    """Count gradient rows into ``grid``; in ``unshared`` mode clear the cache after each use."""
    originals = {
        name: getattr(coded, name)
        for name in ("partition_signs", "partition_gradients", "_everyone")
    }

    def counting(name: str) -> Any:
        def wrapper(model, batches, *args, **kwargs):  # type: ignore[no-untyped-def]
            grid.counter += len(batches)
            return originals[name](model, batches, *args, **kwargs)

        return wrapper

    def unshared_everyone(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return originals["_everyone"](*args, **kwargs)
        finally:
            coded._SHARED.clear()

    coded.partition_signs = counting("partition_signs")
    coded.partition_gradients = counting("partition_gradients")
    if mode == "unshared":
        coded._everyone = unshared_everyone
    coded._SHARED.clear()
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(coded, name, function)
        coded._SHARED.clear()


def config(n: int, rounds: int, output_dir: str) -> RunConfig:
    """Return the run config of one size."""
    return RunConfig(
        num_server_rounds=rounds,
        dataset="digits",
        model="mlp",
        num_workers=n,
        num_partitions=0,  # k = n
        code="bernoulli",
        redundancy=REDUNDANCY,
        batch_size=BATCH_SIZE,
        attack="omniscient",
        byzantine_count=int(BYZANTINE_FRACTION * n),
        byzantine_selection="random",
        eval_every=10**6,  # only the last round (and the initial model) is evaluated
        checkpoint_every=0,
        output_dir=output_dir,
        num_threads=1,
    )


def measure(cfg: RunConfig, mode: str) -> Measured:
    """Run ``cfg`` in process in ``mode``; return the per-round times and counts."""
    grid = CountingGrid(client_app, cfg.num_workers, cfg.to_run_config())
    try:
        with patched(grid, mode):
            record = run_experiment(grid, cfg)
    finally:
        gc.unfreeze()  # what the grid froze is collectable again (as run_inprocess does)
        gc.collect()
    return Measured(grid.seconds, grid.cpu, grid.gradients, record["final"]["test-accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        default=[15, 31, 63, 127],
        help="numbers of workers n, comma-separated (default: 15,31,63,127)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per run (default: 3)")
    parser.add_argument("--quick", action="store_true", help="sizes 15,31 only")
    args = parser.parse_args()
    sizes = [15, 31] if args.quick else args.sizes
    if args.rounds < 2:
        parser.error("--rounds must be >= 2 (round 1 is warm-up and not timed)")
    if max(sizes) > BATCH_SIZE:
        parser.error(f"n = {max(sizes)} exceeds the batch size {BATCH_SIZE} (k = n slices)")
    logging.getLogger("flwr").setLevel(logging.WARNING)
    # Messages stamp the sender's identity, which Flower's runtime sets in a real run.
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    torch.set_num_threads(1)
    started = time.perf_counter()
    load = os.getloadavg()[0]

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for n in sizes:
            cfg = config(n, args.rounds, os.path.join(folder, f"n{n}"))
            code = cfg.allocation_code()
            loads = int(sum(int(x) for x in code.loads))
            b, k = cfg.byzantine_count, cfg.k
            results = {}
            for mode in MODES:
                begin = time.perf_counter()
                results[mode] = measure(cfg, mode)
                print(f"n = {n}, {mode}: {time.perf_counter() - begin:.1f} s", file=sys.stderr)
            expected = {"shared": loads + k, "unshared": loads + b * k}
            for mode in MODES:
                counts = results[mode].gradients
                if any(c != expected[mode] for c in counts):
                    raise AssertionError(f"n = {n}, {mode}: counted {counts}, expected {expected}")
            shared, unshared = results["shared"], results["unshared"]
            if shared.accuracy != unshared.accuracy:
                raise AssertionError(
                    f"n = {n}: shared accuracy {shared.accuracy} != unshared {unshared.accuracy}"
                )
            rows.append((n, b, k, loads, BATCH_SIZE // k, results))

    print(
        f"digits, MLP, omniscient, Bernoulli k = n, r = {REDUNDANCY:g}, B = {BATCH_SIZE}, "
        f"b = floor({BYZANTINE_FRACTION} n), {args.rounds} rounds (round 1 untimed); "
        f"Python {platform.python_version()}, torch {torch.__version__}, flwr {version('flwr')}, "
        f"{platform.machine()}, cores = {os.cpu_count()}, load average {load:.1f}; "
        f"{time.perf_counter() - started:.0f} s\n"
    )
    print(
        "| n | b | k | B/k | sum of loads | gradients/round shared | gradients/round unshared "
        "| s/round shared | s/round unshared | CPU s/round shared | CPU s/round unshared "
        "| unshared / shared (CPU) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    wall: dict[int, dict[str, float]] = {}
    cpu: dict[int, dict[str, float]] = {}
    for n, b, k, loads, slice_size, results in rows:
        wall[n] = {mode: statistics.mean(results[mode].seconds[1:]) for mode in MODES}
        cpu[n] = {mode: statistics.mean(results[mode].cpu[1:]) for mode in MODES}
        print(
            f"| {n} | {b} | {k} | {slice_size} | {loads} | {results['shared'].gradients[-1]:,} "
            f"| {results['unshared'].gradients[-1]:,} | {wall[n]['shared']:.3f} "
            f"| {wall[n]['unshared']:.3f} | {cpu[n]['shared']:.3f} | {cpu[n]['unshared']:.3f} "
            f"| {cpu[n]['unshared'] / cpu[n]['shared']:.1f}x |"
        )
    first, last = rows[0], rows[-1]
    n0, n1 = first[0], last[0]
    print()
    for mode in MODES:
        print(
            f"- {mode}: per-round time at n = {n1} / at n = {n0} = "
            f"{wall[n1][mode] / wall[n0][mode]:.1f} wall, {cpu[n1][mode] / cpu[n0][mode]:.1f} CPU "
            f"(n grows {n1 / n0:.1f}x)"
        )
    _, b1, k1, loads1, _, results1 = last
    print(
        f"- gradients per round at n = {n1}: shared {results1['shared'].gradients[-1]:,} "
        f"(= sum of loads {loads1} + k {k1}); unshared {results1['unshared'].gradients[-1]:,} "
        f"(= b k + sum of loads = {b1} * {k1} + {loads1})"
    )


if __name__ == "__main__":
    main()
