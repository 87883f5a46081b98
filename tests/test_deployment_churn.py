"""Node churn in a real deployment: a SuperNode dies mid-run and a new one takes its row.

One SuperLink and five SuperNodes on localhost (the helpers of ``test_deployment``). After
a few rounds one SuperNode is killed with SIGKILL (its whole process group: the node and
any ClientApp it had started, as when its machine dies) and a new SuperNode is started; it
registers with a new node id and stands by, since every row has a node. The strategy moves
the dead node's row to it (``DirectionStrategy._reassign_orphans``) and the run completes
with the replacement voting; the move is in the round's audit and the node-to-row map in
the checkpoint.

What Flower does with a dead SuperNode (1.41): a SuperNode sends a heartbeat every
``(30 - 5) * U(0.7, 0.9)`` s (17.5 to 22.5 s; ``HEARTBEAT_DEFAULT_INTERVAL`` with no flag
to change it) and the SuperLink keeps it online until ``HEARTBEAT_PATIENCE * 30 = 60`` s
after the last one. Until then the node stays in ``grid.get_node_ids()`` and a message to
it waits; once that time has passed the SuperLink answers any message to it with a
``NODE_UNAVAILABLE`` error reply (sent from the SuperLink's node id 0, not from the dead
node) and drops it from ``get_node_ids()``. With a round timeout above those 60 s, the
round in flight at the kill therefore ends 37.5 to 60 s after the kill without the dead
node's vote, and the next round finds it gone and moves its row.

The deterministic code (n = 5, b = 1) is certified for the fault budget f = b = 1: the
dead node's missing row is one fault, so every round goes on being applied while the row
is orphaned (:mod:`fl_election.quorum`), and the row moves after ``reassign-after``
rounds without a vote.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from test_deployment import (
    BIN_DIR,
    REPO_ROOT,
    Deployment,
    free_ports,
    wait_for_port,
)

from fl_election.simulations.checkpoint import checkpoint_path, read_checkpoint

NUM_NODES = 5
NUM_ROUNDS = 16
#: The node is killed as soon as the stream shows this round has started.
KILL_AT_ROUND = 4
#: Which of the five SuperNodes dies.
VICTIM = 1
CONNECTION = "churn"
RUN_NAME = "churn"
#: Seconds a round waits for replies. Above the SuperLink's 60 s heartbeat patience, so the
#: round in flight at the kill ends when the SuperLink declares the node unavailable, and
#: well above a normal round (5 ClientApp processes importing torch on a 2-core machine).
ROUND_TIMEOUT_S = 120.0
REASSIGN_AFTER = 2
CHECKPOINT_EVERY = 8
MAX_ROUNDS_BELOW_QUORUM = 3
RUN_DEADLINE_S = 900.0
STREAM_DEADLINE_S = 600.0


def supernode_args(link_port: int, port: int, index: int) -> list[str]:
    """Command line of an honest SuperNode with the node config of partition ``index``."""
    return [
        str(BIN_DIR / "flower-supernode"),
        "--insecure",
        "--superlink",
        f"127.0.0.1:{link_port}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--node-config",
        f"partition-id={index} num-partitions={NUM_NODES}",
    ]


def wait_for_log(deployment: Deployment, name: str, pattern: str, alive: list[str]) -> str:
    """Wait until the log of process ``name`` matches ``pattern``; return the last match."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + STREAM_DEADLINE_S
    while time.monotonic() < deadline:
        text = deployment.logs[name].read_text(errors="replace")
        found = regex.findall(text)
        if found:
            return found[-1]
        deployment.check_alive(alive)
        time.sleep(0.5)
    raise AssertionError(f"{name} never logged {pattern!r} within {STREAM_DEADLINE_S} s")


def supernode_id(deployment: Deployment, name: str) -> int:
    """The node id the SuperLink gave SuperNode ``name`` (it logs ``SuperNode ID: N``)."""
    return int(wait_for_log(deployment, name, r"SuperNode ID: (\d+)", [name]))


@pytest.mark.slow
@pytest.mark.timeout(RUN_DEADLINE_S + 300)
def test_deployment_moves_a_dead_supernodes_row_to_a_new_one(tmp_path: Path) -> None:
    link_port, new_port, *node_ports = free_ports(2 + NUM_NODES)
    output_dir = tmp_path / "out"
    result_path = output_dir / f"{RUN_NAME}.json"
    deployment = Deployment(tmp_path, [link_port, *node_ports, new_port])
    nodes = [f"supernode-{i}" for i in range(NUM_NODES)]
    failed = True
    started = time.monotonic()
    try:
        deployment.start(
            "superlink",
            [
                str(BIN_DIR / "flower-superlink"),
                "--insecure",
                "--disable-runtime-dependency-installation",
                "--host",
                "127.0.0.1",
                "--port",
                str(link_port),
            ],
            cwd=tmp_path,
        )
        wait_for_port(link_port, deployment, "superlink")
        for i, port in enumerate(node_ports):
            deployment.start(nodes[i], supernode_args(link_port, port, i), cwd=tmp_path)
        for i, port in enumerate(node_ports):
            wait_for_port(port, deployment, nodes[i])
        node_ids = {name: supernode_id(deployment, name) for name in nodes}
        assert len(set(node_ids.values())) == NUM_NODES, node_ids
        victim_id = node_ids[nodes[VICTIM]]

        (deployment.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f'[superlink.{CONNECTION}]\naddress = "127.0.0.1:{link_port}"\ninsecure = true\n'
        )
        run_config = (
            f"num-workers={NUM_NODES} byzantine-count=1 attack='none' "
            "byzantine-selection='node-config' code='deterministic' "
            f"num-server-rounds={NUM_ROUNDS} eval-every={CHECKPOINT_EVERY} "
            f"reassign-after={REASSIGN_AFTER} round-timeout={ROUND_TIMEOUT_S} "
            f"max-rounds-below-quorum={MAX_ROUNDS_BELOW_QUORUM} "
            f"checkpoint-every={CHECKPOINT_EVERY} "
            f"output-dir='{output_dir}' run-name='{RUN_NAME}'"
        )
        flwr_run = deployment.start(
            "flwr-run",
            [str(BIN_DIR / "flwr"), "run", ".", CONNECTION, "--run-config", run_config, "--stream"],
            cwd=REPO_ROOT,
        )

        # Kill the victim once round KILL_AT_ROUND has begun (the stream may lag a little).
        wait_for_log(
            deployment,
            "flwr-run",
            rf"\[ROUND {KILL_AT_ROUND}/{NUM_ROUNDS}\]",
            ["superlink", "flwr-run", *nodes],
        )
        streamed = re.findall(
            r"\[ROUND (\d+)/", deployment.logs["flwr-run"].read_text(errors="replace")
        )
        killed_in = int(streamed[-1])
        victim = deployment.procs[nodes[VICTIM]]
        killed_at = time.monotonic()
        os.killpg(victim.pid, signal.SIGKILL)  # it leads its own session and group
        victim.wait(timeout=10)
        print(f"\nkilled {nodes[VICTIM]} (node {victim_id}) during round {killed_in}")

        # A new SuperNode: the SuperLink gives it a new node id; it has no row yet.
        deployment.start("supernode-new", supernode_args(link_port, new_port, VICTIM), tmp_path)
        wait_for_port(new_port, deployment, "supernode-new")
        new_id = supernode_id(deployment, "supernode-new")
        assert new_id not in node_ids.values()
        print(f"started supernode-new (node {new_id}) {time.monotonic() - killed_at:.0f} s later")

        alive = ["superlink", "supernode-new", *(n for n in nodes if n != nodes[VICTIM])]
        deadline = time.monotonic() + RUN_DEADLINE_S
        while flwr_run.poll() is None:
            deployment.check_alive(alive)
            assert time.monotonic() < deadline, f"run unfinished after {RUN_DEADLINE_S} s"
            time.sleep(2)
        assert flwr_run.returncode == 0, f"flwr run exited with {flwr_run.returncode}"
        for _ in range(10):  # the file may land just after the stream closed
            if result_path.exists():
                break
            time.sleep(1)
        record = json.loads(result_path.read_text())

        rounds = record["rounds"]
        assert [r["round"] for r in rounds] == list(range(1, NUM_ROUNDS + 1))
        audits = {r["round"]: r["audit"] for r in rounds}
        moves = [(n, move) for n, a in audits.items() for move in a["reassigned"]]
        assert len(moves) == 1, f"expected exactly one row to move: {moves}"
        moved_in, move = moves[0]
        row = move["row"]
        assert move == {"row": row, "from": victim_id, "to": new_id}, move
        # Before the kill every row voted; the victim's row first went missing in the round
        # the kill happened in or the next one (its reply may have been in already; the
        # stream may also lag the ServerApp by a little).
        lost_in = min(n for n, a in audits.items() if row not in a["voters"])
        assert killed_in <= lost_in <= killed_in + 2, (killed_in, lost_in)
        for n in range(1, lost_in):
            assert audits[n]["voters"] == list(range(NUM_NODES)), audits[n]
            assert audits[n]["applied"], audits[n]
        # While the row was orphaned it was missing (the dead node was asked, or was gone
        # already); one missing row is within the fault budget f = 1, so the vote went on.
        orphaned = range(lost_in, moved_in)
        assert 1 <= len(orphaned) < MAX_ROUNDS_BELOW_QUORUM, (lost_in, moved_in)
        for n in orphaned:
            audit = audits[n]
            assert row not in audit["voters"], audit
            assert sorted(audit["voters"]) == [r for r in range(NUM_NODES) if r != row], audit
            assert {"node": victim_id, "row": row} in audit["missing"], audit
            assert audit["applied"] and audit["decision"] == "quorum", audit
            print(f"round {n} (row {row} orphaned): {audit}")
        # From the move on the replacement votes in the row and every round is applied.
        for n in range(moved_in, NUM_ROUNDS + 1):
            audit = audits[n]
            assert audit["voters"] == list(range(NUM_NODES)), audit
            assert audit["applied"] and audit["decision"] == "quorum", audit
            assert not audit["missing"] and not audit["rejected"], audit
        assert audits[NUM_ROUNDS]["voters"] == list(range(NUM_NODES))
        assert "test-accuracy" in record["final"]

        # The checkpoint (written after the last round) holds the new node-to-row map.
        checkpoint = read_checkpoint(checkpoint_path(output_dir, RUN_NAME))
        assert checkpoint.round == NUM_ROUNDS
        mapping = {int(k): v for k, v in checkpoint.state["strategy"]["node_to_worker"].items()}
        assert mapping[new_id] == row
        assert victim_id not in mapping
        expected = {node_ids[n] for n in nodes if n != nodes[VICTIM]} | {new_id}
        assert set(mapping) == expected
        assert sorted(mapping.values()) == list(range(NUM_NODES))

        run_log = deployment.logs["flwr-run"].read_text(errors="replace")
        assert f"Row {row} moves from node {victim_id} to node {new_id}" in run_log
        assert "Traceback" not in run_log
        print(
            f"row {row}: lost in round {lost_in}, moved in round {moved_in} "
            f"(node {victim_id} -> node {new_id}); run took {time.monotonic() - started:.0f} s"
        )
        failed = False
    finally:
        if failed:
            deployment.dump_logs()
        survivors = deployment.stop()
        print(f"churn deployment test wall time: {time.monotonic() - started:.0f} s")
    assert not survivors, f"processes left behind: {survivors}"
    assert all(proc.poll() is not None for proc in deployment.procs.values())
