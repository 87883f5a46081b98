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
