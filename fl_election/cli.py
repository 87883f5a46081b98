"""Command-line interface ``fl-election`` (argparse subcommands).

Election coding after Sohn, Han, Choi, Moon, "Election Coding for Distributed Learning:
Protecting SignSGD against Byzantine Attacks", NeurIPS 2020 (arXiv:1910.06093).

Subcommands:

* ``code``: build an allocation code and print it, its loads, redundancy, maximum load and its
  exact b-tolerance certificate, e.g. ``fl-election code --kind deterministic --n 9 --b 2``.
* ``run``: ``fl-election run -- <flwr run arguments>`` runs ``flwr run ... --stream`` and
  exits non-zero when the ServerApp failed (Flower 1.41/1.42's ``flwr run --stream`` exits 0
  then); for any Flower app, this project's or an outside one.

Other modules add subcommands by appending a ``(name, register)`` pair to :data:`SUBCOMMANDS`,
where ``register(subparsers)`` adds a parser whose ``handler`` default is a function taking the
parsed namespace and returning an exit status.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fl_election.codes import CERTIFY_METHODS, CODE_FACTORIES, TIE_RULES, certify, create_code
from fl_election.cost import round_cost

__all__ = ["SUBCOMMANDS", "build_parser", "main", "serverapp_failure"]

Handler = Callable[[argparse.Namespace], int]
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _code_params(args: argparse.Namespace) -> dict[str, Any]:
    """Map the parsed options to the constructor keyword arguments of ``--kind``."""
    if args.n is None:
        raise ValueError("--n is required")
    kind = args.kind
    if kind == "uncoded":
        return {"n": args.n}
    if kind == "bernoulli":
        params: dict[str, Any] = {"n": args.n, "k": args.k, "seed": args.seed}
        if args.redundancy is not None:
            params["redundancy"] = args.redundancy
        return params
    if kind == "deterministic":
        if args.b is None:
            raise ValueError("--kind deterministic needs --b")
        return {"n": args.n, "b": args.b, "tie_rule": args.tie_rule}
    if args.group is None:
        raise ValueError("--kind repetition needs --group")
    return {"n": args.n, "group": args.group}


def _run_code(args: argparse.Namespace) -> int:
    code = create_code(args.kind, **_code_params(args))
    b = args.b if args.b is not None else 0
    # Certify before printing anything, so bad input leaves stdout empty.
    certificate = certify(
        code,
        b,
        method=args.method,
        seed=args.seed,
        tie_rule=args.tie_rule,
        time_budget=args.time_budget,
    )
    print(code)
    print(f"loads: {[int(x) for x in code.loads]}")
    print(f"redundancy: {code.redundancy:.4f}")
    print(f"max load: {code.max_load}")
    print(f"certificate (b={b}): {certificate}")
    return 0


def _add_code_options(parser: argparse.ArgumentParser, default_kind: str) -> None:
    """Add the options that pick a code (read back by :func:`_code_params`)."""
    parser.add_argument("--kind", choices=sorted(CODE_FACTORIES), default=default_kind)
    parser.add_argument("--n", type=int, help="number of workers")
    parser.add_argument("--k", type=int, default=None, help="partitions (bernoulli; default n)")
    parser.add_argument("--b", type=int, default=None, help="Byzantine workers (b of the code)")
    parser.add_argument("--redundancy", type=float, default=None, help="bernoulli target r")
    parser.add_argument("--seed", type=int, default=0, help="bernoulli / sampling seed")
    parser.add_argument("--group", type=int, default=None, help="repetition group size")
    parser.add_argument(
        "--tie-rule",
        choices=TIE_RULES,
        default="abstain",
        help="what a tied worker sends: 'abstain' (2-bit uplink) or 'forced' (the 1-bit "
        "uplink's tie-break, counted as a wrong vote); a deterministic code is built for it",
    )


def _register_code(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "code",
        help="build an allocation code and certify it",
        description="Build an allocation code, print it and its exact b-tolerance certificate.",
    )
    _add_code_options(parser, default_kind="deterministic")
    parser.add_argument(
        "--method", choices=CERTIFY_METHODS, default="auto", help="certificate method"
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds the certificate may take (then a proven bound or UNKNOWN); default: none",
    )
    parser.set_defaults(handler=_run_code)


def _run_cost(args: argparse.Namespace) -> int:
    code = create_code(args.kind, **_code_params(args))
    bandwidth = args.uplink_mbps * 1e6 / 8
    rows: list[tuple[str, Sequence[int], str]] = [
        ("this code, 1-bit votes", [int(x) for x in code.loads], "sign"),
        ("this code, 1-bit votes + abstain planes", [int(x) for x in code.loads], "sign+abstain"),
        ("uncoded SignSGD-MV", [1] * code.n, "sign"),
        ("full-gradient median (float32)", [1] * code.n, "float32"),
    ]
    print(f"{code.name}: loads {[int(x) for x in code.loads]}, r = {code.redundancy:.2f}")
    print(
        f"per round, d = {args.params:,} parameters, {args.grad_seconds:g} s per partition "
        f"gradient, {args.uplink_mbps:g} Mbit/s uplink per worker:"
    )
    for label, loads, scheme in rows:
        cost = round_cost(
            loads,
            grad_seconds=args.grad_seconds,
            num_params=args.params,
            uplink_bytes_per_second=bandwidth,
            scheme=scheme,
        )
        print(
            f"  {label:42s} compute {cost.compute_seconds:7.3f} s  uplink "
            f"{cost.communication_seconds:7.3f} s  total {cost.total_seconds:7.3f} s  "
            f"({cost.uplink_bytes_total / 1e6:8.2f} MB, load imbalance "
            f"{cost.load_imbalance:.2f})"
        )
    return 0


def _register_cost(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "cost",
        help="time and traffic of one round (the paper's cost model)",
        description="Round time is set by the slowest worker: max load x gradient time, plus "
        "its upload; compared with uncoded SignSGD-MV and the float32 median baseline.",
    )
    _add_code_options(parser, default_kind="bernoulli")
    parser.add_argument("--params", type=int, default=11_173_962, help="model size d")
    parser.add_argument("--grad-seconds", type=float, default=0.05, help="one partition gradient")
    parser.add_argument("--uplink-mbps", type=float, default=100.0, help="per-worker uplink")
    parser.set_defaults(handler=_run_cost)


# What Flower logs when the ServerApp (deployment) or the simulation around it raises:
# "<entity> raised an exception" and then flwr_exit's "Exit Code: <code>", where codes
# 0-99 are successful exits (flwr.supercore.exit).
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAISED = re.compile(r"\b(ServerApp|Simulation) raised an exception")
_EXIT_CODE = re.compile(r"\bExit Code: (\d+)")


def serverapp_failure(lines: Iterable[str], echo: Callable[[str], object] | None = None) -> str:
    """Read a ``flwr run --stream`` log; return its first failure line, or ``""``.

    Parameters
    ----------
    lines : Iterable[str]
        The stream, line by line (read to its end).
    echo : Callable[[str], object] | None (default: None)
        Called with every line as it arrives (to pass the log through).

    Returns
    -------
    str
        The line with the ServerApp's failure marker, or ``""`` when there is none.
    """
    failure = ""
    for line in lines:
        if echo is not None:
            echo(line)
        if failure:
            continue
        plain = _ANSI.sub("", line)
        code = _EXIT_CODE.search(plain)
        if _RAISED.search(plain) or (code is not None and int(code.group(1)) >= 100):
            failure = plain.strip()
    return failure


def _run_flwr(args: argparse.Namespace) -> int:
    flwr_args = list(args.flwr_args)
    if flwr_args[:1] == ["--"]:
        flwr_args = flwr_args[1:]
    if not flwr_args:
        raise ValueError("give the flwr run arguments, e.g. fl-election run -- . --stream")
    if "--stream" not in flwr_args:
        flwr_args.append("--stream")
    command = [args.flwr, "run", *flwr_args]
    try:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
    except OSError as error:
        raise ValueError(f"cannot start {args.flwr!r}: {error}") from error
    with proc:
        assert proc.stdout is not None
        failure = serverapp_failure(proc.stdout, lambda line: print(line, end="", flush=True))
        status = proc.wait()
    if status != 0:
        return status
    if failure:
        print(f"fl-election run: the ServerApp failed ({failure}); exit 1", file=sys.stderr)
        return 1
    return 0


def _register_run(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="flwr run --stream, exiting non-zero when the ServerApp failed",
        description="Run `flwr run <args> --stream`, pass its log through and exit with its "
        "status, or 1 when the log shows that the ServerApp (or the simulation) raised: "
        "Flower 1.41/1.42's `flwr run --stream` exits 0 then. Example: "
        'fl-election run -- . --run-config "num-server-rounds=3"',
    )
    parser.add_argument("--flwr", default="flwr", help="the flwr executable (default: flwr)")
    parser.add_argument("flwr_args", nargs=argparse.REMAINDER, help="-- then flwr run's args")
    parser.set_defaults(handler=_run_flwr)


#: Registered subcommands; extend to add more.
SUBCOMMANDS: list[tuple[str, Register]] = [
    ("code", _register_code),
    ("cost", _register_cost),
    ("run", _register_run),
]


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="fl-election", description="Election-coded SignSGD with majority vote."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for _, register in SUBCOMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fl-election`` console script.

    Parameters
    ----------
    argv : sequence of str or None (default: None)
        Arguments without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 on success, 2 on bad input (the message goes to stderr).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exit_request:
        # argparse exits 0 after --help and 2 on a usage error (message already on stderr).
        status = exit_request.code
        return status if isinstance(status, int) else (0 if status is None else 2)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ValueError as error:
        print(f"fl-election {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
