"""Search low-redundancy perfectly b-tolerant codes and write the table and its README summary.

Election coding after Sohn, Han, Choi, Moon, "Election Coding for Distributed Learning:
Protecting SignSGD against Byzantine Attacks", NeurIPS 2020 (arXiv:1910.06093).

Usage::

    python scripts/search_codes.py --search --n-max 25 --seconds 10   # update the JSON table
    python scripts/search_codes.py --table                            # write docs/codes_table.md
    python scripts/search_codes.py --table --tie-rule forced          # its 1-bit-uplink section

``--search`` starts, for every ``(n, b)`` with ``1 <= b < n/2``, from the best of the structured
code and the current table entry, runs restarted simulated annealing
(:func:`fl_election._search.anneal`) for the given time, certifies the result exactly with
:func:`fl_election.codes.certify` and stores it only if it is lighter. The table is rewritten
after every pair, so an interrupted search keeps what it found.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fl_election import codes  # noqa: E402
from fl_election._search import anneal, structured_rows  # noqa: E402

TABLE_MD = REPO / "docs" / "codes_table.md"
#: Heading of the section of ``docs/codes_table.md`` that ``--tie-rule forced`` (re)writes.
FORCED_HEADING = "## Under a forced tie rule (1-bit uplink)"

#: Known small optima / upper bounds on r from the SPEC, section 3 (the paper's search).
KNOWN_BOUNDS: dict[tuple[int, int], str] = {
    (5, 1): "3.80 (optimal)",
    (7, 1): "<= 4.43",
    (7, 2): "<= 5.86",
    (9, 1): "<= 5.33",
    (9, 2): "<= 6.56",
    (9, 3): "<= 7.89",
    (11, 1): "<= 5.82",
    (11, 2): "<= 7.64",
}


def _load_entries() -> dict[tuple[int, int], dict[str, object]]:
    path = codes.DETERMINISTIC_TABLE_PATH
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {(int(e["n"]), int(e["b"])): e for e in raw["codes"]}


def _save_entries(entries: dict[tuple[int, int], dict[str, object]]) -> None:
    path = codes.DETERMINISTIC_TABLE_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "description": (
            "Perfectly b-tolerant allocation codes (k = n) found by scripts/search_codes.py; "
            "rows list the partitions each worker holds; every entry certified exactly."
        ),
        "codes": [entries[key] for key in sorted(entries)],
    }
    # One code per line keeps the file small and its diffs readable.
    body = ",\n  ".join(json.dumps(entry) for entry in payload["codes"])
    text = f'{{"description": {json.dumps(payload["description"])},\n "codes": [\n  {body}\n ]}}'

    # Write then rename, so a reader never sees a half-written table.
    partial = path.with_suffix(".json.tmp")
    partial.write_text(text + "\n", encoding="utf-8")
    os.replace(partial, path)
    codes._deterministic_table.cache_clear()


def _entry(matrix: np.ndarray, n: int, b: int, margin: int, source: str) -> dict[str, object]:
    rows = [[int(j) for j in np.flatnonzero(row)] for row in matrix]
    return {
        "n": n,
        "b": b,
        "ones": int(matrix.sum()),
        "redundancy": round(float(matrix.sum()) / n, 4),
        "max_load": int(matrix.sum(axis=1).max()),
        "worst_margin": margin,
        "source": source,
        "rows": rows,
    }


def search(n_min: int, n_max: int, seconds: float, seed: int) -> None:
    """Anneal every ``(n, b)`` in range and store improvements in the JSON table."""
    entries = _load_entries()
    for n in range(n_min, n_max + 1):
        for b in range(1, (n + 1) // 2):
            if 2 * b + 1 == n:
                continue  # every worker must always vote right: all-ones is the only option
            start = codes.deterministic(n, b)
            began = time.monotonic()
            found = anneal(
                start.matrix, b, seconds=seconds, seed=seed + 1000 * n + b, pattern_limit=30_000
            )
            candidate = codes.AllocationCode(found, "search")
            cert = codes.certify(candidate, b)
            if not cert.tolerant:
                print(f"n={n} b={b}: search result failed certification, skipped", flush=True)
                continue
            structured_ones = int(sum(len(r) for r in structured_rows(n, b)))
            if candidate.ones < start.ones:
                entries[(n, b)] = _entry(found, n, b, cert.worst_margin, "anneal")
                _save_entries(entries)
            print(
                f"n={n:2d} b={b:2d}: structured {structured_ones}, start {start.ones}, "
                f"found {candidate.ones} (r={candidate.ones / n:.3f}) "
                f"in {time.monotonic() - began:.1f}s",
                flush=True,
            )


def write_table(n_max: int, path: Path) -> None:
    """Write the markdown table of deterministic codes for ``n <= n_max``."""
    lines = [
        "| n | b | r (ours) | ones | max load | structured r | certified | known (SPEC/paper) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in range(3, n_max + 1):
        for b in range(1, (n + 1) // 2):
            code = codes.deterministic(n, b)
            cert = codes.certify(code, b)
            structured = sum(len(r) for r in structured_rows(n, b)) / n
            known = KNOWN_BOUNDS.get((n, b), "")
            lines.append(
                f"| {n} | {b} | {code.redundancy:.2f} | {code.ones} | {code.max_load} | "
                f"{structured:.2f} | {'yes' if cert.tolerant else 'NO'} "
                f"(margin {cert.worst_margin}) | {known} |"
            )
    header = (
        "Deterministic perfectly b-tolerant codes returned by `fl_election.codes.deterministic` "
        "(k = n, no empty worker), each certified exactly (`certify`: C - W - 2b >= 1 on every "
        'sign pattern). r = ones / n; "structured r" is the all-or-disjoint-blocks family '
        "alone; the rest comes from simulated annealing (`scripts/search_codes.py`). For even n "
        "the patterns with sum(m) = 0 have no majority target and are not checked (SPEC "
        'convention), which makes even n cheaper than the odd n below them. "known" is the '
        "figure from the SPEC, section 3 (the paper's search). Generated by "
        "`python scripts/search_codes.py --table`.\n\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep a forced-tie-rule section written earlier by --tie-rule forced.
    _, forced = _split_forced_section(path)
    path.write_text(header + "\n".join(lines) + "\n" + forced, encoding="utf-8")


def _split_forced_section(path: Path) -> tuple[str, str]:
    """Return the text of ``path`` before the forced-tie-rule section and that section."""
    if not path.is_file():
        return "", ""
    text = path.read_text(encoding="utf-8")
    start = text.find("\n" + FORCED_HEADING)
    if start < 0:
        return text, ""
    return text[:start], text[start:]


def write_forced_table(n_max: int, path: Path) -> None:
    """Write (or replace) the section comparing the abstain and forced tie rules."""
    lines = [
        "| n | b | abstain r | abstain ones | abstain max load | even-load workers "
        "| forced margin of the abstain code | forced r | forced ones | forced max load "
        "| extra r | forced code certified |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in range(3, n_max + 1):
        for b in range(1, (n + 1) // 2):
            abstain = codes.deterministic(n, b)
            already = codes.certify(abstain, b, tie_rule="forced")
            began = time.perf_counter()
            forced = codes.deterministic(n, b, tie_rule="forced")
            elapsed = time.perf_counter() - began
            cert = codes.certify(forced, b, tie_rule="forced")
            even = int((abstain.loads % 2 == 0).sum())
            verdict = "yes, as is" if already.tolerant else "NO"
            lines.append(
                f"| {n} | {b} | {abstain.redundancy:.2f} | {abstain.ones} | {abstain.max_load} | "
                f"{even} | {already.worst_margin} ({verdict}) | {forced.redundancy:.2f} | "
                f"{forced.ones} | {forced.max_load} | "
                f"{forced.redundancy - abstain.redundancy:+.2f} | "
                f"{'yes' if cert.tolerant else 'NO'} (margin {cert.worst_margin}) |"
            )
            print(f"n={n:2d} b={b:2d}: forced code in {elapsed:.2f}s", file=sys.stderr)
    text = (
        f"\n{FORCED_HEADING}\n\n"
        "With a 1-bit uplink a worker whose local vote is a tie (an even load split evenly) "
        "cannot abstain: it breaks the tie by a local rule (the sign of its summed float "
        "gradient) that the certificate does not trust, so `certify(code, b, "
        'tie_rule="forced")` counts every tie as a wrong vote, the adversary\'s best case '
        "(and one that is attained). The columns compare `deterministic(n, b)` (abstain rule, "
        'the table above) with `deterministic(n, b, tie_rule="forced")`: "forced margin of the '
        'abstain code" is C - W - 2b of the abstain code under the forced rule (it needs >= 1; '
        'ties are what it loses), "extra r" the redundancy the forced rule costs. Every forced '
        "code has odd loads only, so none of its workers can tie and it is certified under both "
        "rules; some are lighter than the abstain-rule code, which they could replace. "
        "Generated by `python scripts/search_codes.py --table --tie-rule forced`.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    before, _ = _split_forced_section(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(before.rstrip("\n") + "\n" + text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the search and/or write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search", action="store_true", help="anneal and update the table")
    parser.add_argument("--table", action="store_true", help="write docs/codes_table.md")
    parser.add_argument("--n-min", type=int, default=3)
    parser.add_argument("--n-max", type=int, default=15)
    parser.add_argument("--table-n-max", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=10.0, help="annealing time per (n, b)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=TABLE_MD)
    parser.add_argument(
        "--tie-rule",
        choices=codes.TIE_RULES,
        default="abstain",
        help="with --table: 'abstain' writes the main table (keeping a forced section); "
        "'forced' (re)writes only the section comparing it with the forced tie rule",
    )
    args = parser.parse_args(argv)
    if not (args.search or args.table):
        parser.error("give --search and/or --table")
    if args.search:
        search(args.n_min, args.n_max, args.seconds, args.seed)
    if args.table:
        if args.tie_rule == "forced":
            write_forced_table(args.table_n_max, args.output)
        else:
            write_table(args.table_n_max, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
