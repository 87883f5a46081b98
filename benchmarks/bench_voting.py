"""Benchmark the packed-sign voting kernels at ResNet-18 size.

Times one global majority vote over ``n`` random sign planes of ``d`` coordinates (with and
without abstain planes, given as one matrix or as a list as the strategy does) and the
per-voter ``packed_agreement``, each with the compiled numba kernel and with the plain
reference kernel (``kernel="reference"``), against reading the same packed bytes once
(``np.bitwise_xor.reduce(stack, axis=0)``) and against the naive whole-array
unpack-to-int8-and-sum vote, plus the client-side ``local_majority`` and ``pack_signs``.
Prints a markdown table: median and minimum wall time, and the minimum CPU time of the process
(all its threads; it leaves out the time spent waiting for a core on a shared machine), each
also as a ratio to the read-once reference. Numba's compilation (or loading from its cache)
happens in the untimed warm-up call.

Example::

    PYTHONPATH=. python benchmarks/bench_voting.py --n 15 --d 11_200_000 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version

import numpy as np

from fl_election import voting
from fl_election.voting import global_majority, local_majority, pack_signs, packed_agreement


def measure_round_robin(
    functions: list[Callable[[], object]], repeats: int
) -> list[tuple[float, float, float]]:
    """Return (median wall, min wall, min process CPU) time in ms per function.

    The functions are called in turn each repeat: taking turns exposes every operation to the
    same background load, so that their ratios stay meaningful on a shared machine.
    """
    for function in functions:
        function()  # warm-up (and numba compilation / cache loading)
    walls: list[list[float]] = [[] for _ in functions]
    cpus: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for index, function in enumerate(functions):
            start_cpu = time.process_time()
            start = time.perf_counter()
            function()
            walls[index].append(time.perf_counter() - start)
            cpus[index].append(time.process_time() - start_cpu)
    return [
        (1e3 * statistics.median(wall), 1e3 * min(wall), 1e3 * min(cpu))
        for wall, cpu in zip(walls, cpus, strict=True)
    ]


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
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default: 5)")
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

    n, d = args.n, args.d
    rng = np.random.default_rng(args.seed)
    stack, abstain = random_planes(rng, n, d, args.abstain_fraction)
    plain = rng.integers(0, 256, size=stack.shape, dtype=np.uint8)
    plain[:, -1] &= voting._padding_mask(d)
    abstain_list = list(abstain)
    expected = naive_vote(plain, d)
    elected = global_majority(stack, d, abstain, kernel="reference")
    for kernel in ("numba", "reference"):
        assert np.array_equal(global_majority(plain, d, kernel=kernel), expected)
        assert np.array_equal(global_majority(stack, d, abstain, kernel=kernel), elected)
        assert np.array_equal(global_majority(stack, d, abstain_list, kernel=kernel), elected)
    assert np.array_equal(
        packed_agreement(stack, abstain_list, elected, kernel="numba"),
        packed_agreement(stack, abstain_list, elected, kernel="reference"),
    )

    labelled: list[tuple[str, Callable[[], object]]] = []

    def add(label: str, function: Callable[[], object]) -> None:
        labelled.append((label, function))

    add(
        "read the packed bytes once: `np.bitwise_xor.reduce(stack, axis=0)`",
        lambda: np.bitwise_xor.reduce(plain, axis=0),
    )
    fraction = f"{args.abstain_fraction:.0%}"
    for kernel in ("numba", "reference"):
        add(
            f"{kernel}: `global_majority`, no abstain planes",
            lambda k=kernel: global_majority(plain, d, kernel=k),
        )
        add(
            f"{kernel}: `global_majority`, abstain planes ({fraction})",
            lambda k=kernel: global_majority(stack, d, abstain, kernel=k),
        )
        add(
            f"{kernel}: `global_majority`, abstain planes as a list",
            lambda k=kernel: global_majority(stack, d, abstain_list, kernel=k),
        )
        add(
            f"{kernel}: `packed_agreement`, abstain planes as a list",
            lambda k=kernel: packed_agreement(stack, abstain_list, elected, kernel=k),
        )
    add("naive: unpack the whole stack to int8, sum, sign", lambda: naive_vote(plain, d))

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
    rows = [(label, *timing) for (label, _), timing in zip(labelled, timings, strict=True)]
    _, read_median, read_min, read_cpu = rows[0]
    print(
        f"n = {n}, d = {d:_}, repeats = {args.repeats}, numpy {np.__version__}, "
        f"numba {version('numba')}, python {platform.python_version()}, "
        f"{platform.machine()}, cores = {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| operation | median (ms) | min (ms) | min CPU (ms) | median / read-once "
        "| min / read-once min | min CPU / read-once min CPU |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, median, best, cpu in rows:
        print(
            f"| {label} | {median:.2f} | {best:.2f} | {cpu:.2f} | {median / read_median:.2f} "
            f"| {best / read_min:.2f} | {cpu / read_cpu:.2f} |"
        )


if __name__ == "__main__":
    main()
