"""Time the exact certificate: enumeration up to k = 24, the integer program beyond.

    python benchmarks/bench_certify.py

Prints one markdown row per case for BENCHMARKS.md (median of 3 runs).
"""

from __future__ import annotations

import os
import platform
import statistics
import time

from fl_election.codes import bernoulli, certify, deterministic

CASES = [
    # a tolerant code must be checked on every pattern: the worst case of enumeration
    ("deterministic(24, 5)", lambda: deterministic(24, 5), 5, "enumeration"),
    ("deterministic(25, 6)", lambda: deterministic(25, 6), 6, "enumeration"),
    ("deterministic(25, 6)", lambda: deterministic(25, 6), 6, "milp"),
    ("bernoulli(27, k=27, r=6, seed=0)", lambda: bernoulli(27, redundancy=6.0, seed=0), 3, "milp"),
]  # fmt: skip


def main() -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print("| code | k | b | method | tolerant | median (s) |")
    print("|---|---:|---:|---|---|---:|")
    for name, make, b, method in CASES:
        code = make()
        times = []
        for _ in range(3):
            started = time.perf_counter()
            result = certify(code, b, method=method)
            times.append(time.perf_counter() - started)
        print(
            f"| `{name}` | {code.k} | {b} | {method} | {result.tolerant} | "
            f"{statistics.median(times):.2f} |"
        )


if __name__ == "__main__":
    main()
