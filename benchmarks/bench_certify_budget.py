"""Time the certificate with and without a time budget (issue 13, item 4).

    python benchmarks/bench_certify_budget.py          # skips the no-budget runs that take minutes
    python benchmarks/bench_certify_budget.py --all    # runs them too (n = 63: about 8 minutes)

Prints one markdown row per case for BENCHMARKS.md (one run each). The n = 26 cases are a
Bernoulli and a deterministic code and the Bernoulli code restricted to 25 and 20 of its rows
(what re-certifying the rows that answered costs); the n = 63 case is the legal config
``bernoulli, n = 63, k = 30, r = 25, b = 3`` whose unbudgeted integer program ran for minutes
before round 1. Without ``--all`` a no-budget run known to take minutes prints
"skipped (>60 s)".
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

from fl_election.certificate import DEFAULT_CERTIFY_TIME_BUDGET, Certificate, certify
from fl_election.codes import AllocationCode, create_code


def bernoulli_26() -> AllocationCode:
    return create_code("bernoulli", n=26, k=26, redundancy=5, seed=0)


def deterministic_26() -> AllocationCode:
    return create_code("deterministic", n=26, b=3, tie_rule="forced")


def bernoulli_63() -> AllocationCode:
    return create_code("bernoulli", n=63, k=30, redundancy=25, seed=0)


def rows_of(make: Callable[[], AllocationCode], rows: int) -> Callable[[], AllocationCode]:
    def restricted() -> AllocationCode:
        code = make()
        return AllocationCode(code.matrix[:rows], f"{code.name}[:{rows} rows]")

    return restricted


CASES: list[tuple[str, Callable[[], AllocationCode], int, bool]] = [
    # (label, code, b, the no-budget run takes minutes)
    ("bernoulli n=26 k=26 r=5", bernoulli_26, 1, False),
    ("  rows 0..24 (one silent)", rows_of(bernoulli_26, 25), 1, False),
    ("  rows 0..19 (six silent)", rows_of(bernoulli_26, 20), 1, False),
    ("deterministic n=26 b=3", deterministic_26, 3, False),
    ("bernoulli n=63 k=30 r=25", bernoulli_63, 3, True),
]  # fmt: skip
BUDGETS: tuple[float | None, ...] = (None, 2.0, DEFAULT_CERTIFY_TIME_BUDGET)
TIE_RULE = "forced"  # the 1-bit uplink's certificate, what a run uses by default


def verdict(cert: Certificate) -> str:
    if cert.status == "unknown":
        return "unknown"
    return "tolerant" if cert.tolerant else "NOT tolerant"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="also run the slow no-budget cases")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(f"tie rule: {TIE_RULE}")
    print("| code | n | k | b | method | budget (s) | status | verdict | margin | seconds |")
    print("|---|---:|---:|---:|---|---:|---|---|---|---:|")
    for label, make, b, slow in CASES:
        code = make()
        for budget in BUDGETS:
            shown = "none" if budget is None else f"{budget:g}"
            if budget is None and slow and not args.all:
                print(
                    f"| {label} | {code.n} | {code.k} | {b} | auto | {shown} | "
                    "skipped (>60 s) | | | |"
                )
                continue
            started = time.perf_counter()
            cert = certify(code, b, tie_rule=TIE_RULE, time_budget=budget)
            seconds = time.perf_counter() - started
            margin = str(cert.worst_margin)
            if cert.status != "exact":
                low = cert.proven_margin_lower_bound
                margin = f"[{'?' if low is None else low}, {cert.worst_margin}]"
            print(
                f"| {label} | {code.n} | {code.k} | {b} | {cert.method} | {shown} | "
                f"{cert.status} | {verdict(cert)} | {margin} | {seconds:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
