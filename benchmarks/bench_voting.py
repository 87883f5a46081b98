"""Benchmark the packed-sign voting kernels at ResNet-18 size.

Times one global majority vote over ``n`` random sign planes of ``d`` coordinates (with and
without abstain planes) against reading the same packed bytes once
(``np.bitwise_xor.reduce(stack, axis=0)``) and against the naive unpack-to-int8-and-sum
vote, plus the client-side ``local_majority`` and ``pack_signs``. Prints a markdown table.

Example::

    python benchmarks/bench_voting.py --n 15 --d 11_200_000 --repeats 15
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from fl_election import voting
from fl_election.voting import global_majority, local_majority, pack_signs


def measure_round_robin(
    functions: list[Callable[[], object]], repeats: int
) -> list[tuple[float, float]]:
    """Return (median, min) wall time in ms per function, calling them in turn each repeat.

    Taking turns exposes every operation to the same background load, so that their ratios
    stay meaningful on a shared machine.
    """
    for function in functions:
        function()  # warm-up
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for index, function in enumerate(functions):
            start = time.perf_counter()
            function()
            times[index].append(time.perf_counter() - start)
    return [(1e3 * statistics.median(t), 1e3 * min(t)) for t in times]


def random_planes(
    rng: np.random.Generator, n: int, d: int, abstain_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Random sign planes and abstain planes (each coordinate abstains w.p. the fraction)."""
    num_bytes = (d + 7) // 8
    signs = rng.integers(0, 256, size=(n, num_bytes), dtype=np.uint8)
    abstain = np.empty_like(signs)
    for row in range(n):
        abstain[row] = np.packbits(rng.random(d, dtype=np.float32) < abstain_fraction)
    signs &= ~abstain  # the wire format: an abstaining coordinate has sign bit 0
    signs[:, -1] &= voting._padding_mask(d)
    return signs, abstain


def naive_vote(stack: np.ndarray, d: int) -> np.ndarray:
    """Unpack every vote to int8 in {-1, +1} and take the sign of the sum."""
    votes = np.unpackbits(stack, axis=1, count=d).view(np.int8)
    votes = 2 * votes - 1
    return np.sign(votes.sum(axis=0, dtype=np.int8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=15, help="number of votes (default: 15)")
    parser.add_argument(
        "--d",
        type=lambda s: int(s.replace("_", "")),
        default=11_200_000,
        help="coordinates (default: 11_200_000, ResNet-18)",
    )
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats (default: 15)")
    parser.add_argument(
        "--abstain-fraction",
        type=float,
        default=0.25,
        help="fraction of coordinates each voter abstains on in the abstain run (default: 0.25)",
    )
    parser.add_argument(
        "--partitions", type=int, default=3, help="L of local_majority (default: 3)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    stack, abstain = random_planes(rng, args.n, args.d, args.abstain_fraction)
    plain = rng.integers(0, 256, size=stack.shape, dtype=np.uint8)
    plain[:, -1] &= voting._padding_mask(args.d)
    abstain_list = list(abstain)
    assert np.array_equal(global_majority(plain, args.d), naive_vote(plain, args.d))

    labelled: list[tuple[str, Callable[[], object]]] = []

    def add(label: str, function: Callable[[], object]) -> None:
        labelled.append((label, function))

    n, d = args.n, args.d
    add(
        "read the packed bytes once: `np.bitwise_xor.reduce(stack, axis=0)`",
        lambda: np.bitwise_xor.reduce(plain, axis=0),
    )
    add(
        "`global_majority`, no abstain planes, 1 thread",
        lambda: global_majority(plain, d, threads=1),
    )
    add(
        "`global_majority`, no abstain planes, 2 threads",
        lambda: global_majority(plain, d, threads=2),
    )
    add(
        "`global_majority_packed`, no abstain planes, 1 thread",
        lambda: voting.global_majority_packed(plain, d, threads=1),
    )
    add(
        f"`global_majority`, abstain planes ({args.abstain_fraction:.0%}), 1 thread",
        lambda: global_majority(stack, d, abstain, threads=1),
    )
    add(
        f"`global_majority`, abstain planes ({args.abstain_fraction:.0%}), 2 threads",
        lambda: global_majority(stack, d, abstain, threads=2),
    )
    add(
        "`global_majority`, abstain planes as a list, 1 thread",
        lambda: global_majority(stack, d, abstain_list, threads=1),
    )
    add("naive: unpack to int8, sum, sign", lambda: naive_vote(plain, d))

    signs = rng.integers(-1, 2, size=(args.partitions, d)).astype(np.int8)
    signs_float = signs.astype(np.float32)
    vote = local_majority(signs)
    add(f"`local_majority`, L = {args.partitions}, int8", lambda: local_majority(signs))
    add(f"`local_majority`, L = {args.partitions}, float32", lambda: local_majority(signs_float))
    add("`pack_signs`, int8 vote with ties (2 planes)", lambda: pack_signs(vote))
    binary = np.where(vote == 0, 1, vote).astype(np.int8)
    add("`pack_signs`, int8 vote without ties (1 plane)", lambda: pack_signs(binary))
    add("`pack_signs`, float32 vote without ties", lambda: pack_signs(binary.astype(np.float32)))

    timings = measure_round_robin([function for _, function in labelled], args.repeats)
    rows = [
        (label, median, best) for (label, _), (median, best) in zip(labelled, timings, strict=True)
    ]
    read_once, read_once_min = rows[0][1], rows[0][2]
    print(
        f"n = {n}, d = {d:_}, repeats = {args.repeats}, numpy {np.__version__}, "
        f"python {platform.python_version()}, {platform.machine()}, "
        f"cores = {os.cpu_count()}\n"
    )
    print("| operation | median (ms) | min (ms) | median / read-once | min / read-once min |")
    print("|---|---:|---:|---:|---:|")
    for label, median, best in rows:
        print(
            f"| {label} | {median:.2f} | {best:.2f} | {median / read_once:.2f} "
            f"| {best / read_once_min:.2f} |"
        )


if __name__ == "__main__":
    main()
