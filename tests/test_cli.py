"""Tests for the fl-election command line (fl_election.cli)."""

from __future__ import annotations

import pytest

from fl_election.cli import main
from fl_election.codes import deterministic


def test_code_deterministic_prints_code_and_certificate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["code", "--kind", "deterministic", "--n", "9", "--b", "2"]) == 0
    out = capsys.readouterr().out
    code = deterministic(9, 2)
    assert str(code) in out
    assert f"redundancy: {code.redundancy:.4f}" in out
    assert f"max load: {code.max_load}" in out
    assert "loads: [" in out
    assert "perfectly 2-tolerant" in out


def test_code_uncoded_shows_witness(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["code", "--kind", "uncoded", "--n", "5", "--b", "1"]) == 0
    out = capsys.readouterr().out
    assert "NOT 1-tolerant" in out and "witness pattern" in out


def test_code_bernoulli_and_sampled_method(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "code",
        "--kind",
        "bernoulli",
        "--n",
        "7",
        "--k",
        "9",
        "--redundancy",
        "3",
        "--seed",
        "2",
        "--b",
        "1",
        "--method",
        "sampled",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "bernoulli(n=7, k=9" in out
    assert "sampled" in out.lower()


def test_code_repetition(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["code", "--kind", "repetition", "--n", "6", "--group", "3"]) == 0
    out = capsys.readouterr().out
    assert "repetition(n=6, group=3)" in out and "redundancy: 3.0000" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["code", "--kind", "deterministic", "--n", "9", "--b", "5"], "0 <= b < n/2"),
        (["code", "--kind", "repetition", "--n", "7", "--group", "3"], "divide"),
        (["code", "--kind", "repetition", "--n", "6"], "--group"),
        (["code", "--kind", "deterministic", "--n", "6"], "--b"),
        (["code", "--kind", "bernoulli", "--n", "5", "--redundancy", "9"], "(0, 1]"),
        (["code", "--kind", "uncoded"], "--n"),
        (["code", "--kind", "bernoulli", "--n", "9", "--b", "7"], "0 <= b < n/2"),
    ],
)
def test_code_bad_input_exits_2_without_traceback(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_unknown_kind_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["code", "--kind", "ldpc", "--n", "5"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_missing_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err


def test_cost_subcommand_compares_schemes(capsys):
    from fl_election.cli import main as cli_main

    assert cli_main(["cost", "--kind", "deterministic", "--n", "5", "--b", "1", "--params", "800",
                     "--grad-seconds", "0.1", "--uplink-mbps", "0.0064"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    lines = {
        line.split("compute")[0].strip(): line for line in out.splitlines() if "compute" in line
    }
    # max load 5 of the paper's 5x5 code: 0.5 s of compute; 100 bytes at 800 B/s: 0.125 s
    assert "compute   0.500 s" in lines["this code, 1-bit votes"]
    assert "uplink   0.125 s" in lines["this code, 1-bit votes"]
    assert "uplink   4.000 s" in lines["full-gradient median (float32)"]


def test_cost_subcommand_bad_input_exits_2(capsys):
    from fl_election.cli import main as cli_main

    assert cli_main(["cost", "--kind", "deterministic", "--n", "5"]) == 2
    assert "needs --b" in capsys.readouterr().err


def test_code_certificate_obeys_a_time_budget(capsys: pytest.CaptureFixture[str]) -> None:
    # n = 63, k = 30: the unbudgeted integer program runs for minutes; one second decides
    # nothing, and the CLI says so instead of blocking.
    args = ["code", "--kind", "bernoulli", "--n", "63", "--k", "30", "--redundancy", "25"]
    assert main([*args, "--b", "3", "--time-budget", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "UNKNOWN" in out or "PROVEN" in out, out
    assert main([*args, "--b", "3", "--time-budget", "0"]) == 2
    assert "time_budget" in capsys.readouterr().err


def test_code_tie_rule_builds_and_certifies_for_the_forced_rule(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["code", "--kind", "deterministic", "--n", "7", "--b", "1"]) == 0
    abstain = capsys.readouterr().out
    assert (
        main(["code", "--kind", "deterministic", "--n", "7", "--b", "1", "--tie-rule", "forced"])
        == 0
    )
    forced = capsys.readouterr().out
    assert "ties forced" in forced and "perfectly 1-tolerant" in forced
    assert "ties abstain" in abstain and forced != abstain


# ---------------------------------------------------------------- fl-election run (exit guard)

SUCCESS_STREAM = [
    "INFO :      Starting FedAvg strategy:\n",
    "INFO :      [ROUND 1/2]\n",
    "INFO :      Run finished 2 round(s) in 3.10s\n",
]
SERVERAPP_RAISED = [  # a deployment: flwr-serverapp logs, then flwr_exit's exit message
    "INFO :      [ROUND 1/2]\n",
    "\x1b[91mERROR \x1b[0m:   ServerApp raised an exception\n",
    "Traceback (most recent call last):\n",
    "ValueError: only 3 of 5 nodes connected\n",
    "\x1b[91mERROR \x1b[0m:   Exit Code: 201\n",
    "An unhandled exception occurred in the ServerApp.\n",
]
SIMULATION_RAISED = [
    "\x1b[91mERROR \x1b[0m:   Simulation raised an exception\n",
    "RuntimeError: An error was encountered. Ending simulation.\n",
    "\x1b[91mERROR \x1b[0m:   Exit Code: 300\n",
]
EXIT_CODE_ONLY = ["INFO :      [ROUND 1/2]\n", "ERROR :   Exit Code: 200\n"]


def test_serverapp_failure_reads_flowers_failure_markers() -> None:
    from fl_election.cli import serverapp_failure

    assert serverapp_failure(SUCCESS_STREAM) == ""
    assert serverapp_failure(SERVERAPP_RAISED) == "ERROR :   ServerApp raised an exception"
    assert serverapp_failure(SIMULATION_RAISED) == "ERROR :   Simulation raised an exception"
    assert serverapp_failure(EXIT_CODE_ONLY) == "ERROR :   Exit Code: 200"
    seen: list[str] = []
    serverapp_failure(SERVERAPP_RAISED, seen.append)
    assert seen == SERVERAPP_RAISED  # the whole log passes through


def fake_flwr(tmp_path, lines: list[str], status: int = 0) -> str:  # noqa: ANN001
    """An executable standing in for ``flwr``: prints its arguments, then ``lines``."""
    import sys

    script = tmp_path / "flwr"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "print('ARGS', sys.argv[1:])\n"
        f"sys.stdout.write({''.join(lines)!r})\n"
        f"sys.exit({status})\n"
    )
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize(
    ("lines", "status", "want"),
    [
        (SUCCESS_STREAM, 0, 0),
        (SERVERAPP_RAISED, 0, 1),  # what Flower 1.41/1.42 does: exit 0 after a failure
        (SIMULATION_RAISED, 0, 1),
        (SUCCESS_STREAM, 3, 3),  # flwr's own failure passes through
    ],
    ids=["success", "serverapp-raised", "simulation-raised", "flwr-failed"],
)
def test_run_exits_non_zero_when_the_serverapp_failed(
    tmp_path, capsys: pytest.CaptureFixture[str], lines: list[str], status: int, want: int
) -> None:  # noqa: ANN001
    flwr = fake_flwr(tmp_path, lines, status)
    assert main(["run", "--flwr", flwr, "--", ".", "--run-config", "num-server-rounds=2"]) == want
    captured = capsys.readouterr()
    assert "ARGS ['run', '.', '--run-config', 'num-server-rounds=2', '--stream']" in captured.out
    assert lines[-1] in captured.out  # the log is passed through
    assert ("the ServerApp failed" in captured.err) == (want == 1)


def test_run_without_flwr_arguments_or_executable_is_a_usage_error(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:  # noqa: ANN001
    assert main(["run"]) == 2
    assert main(["run", "--flwr", str(tmp_path / "missing"), "--", "."]) == 2
    assert "cannot start" in capsys.readouterr().err
