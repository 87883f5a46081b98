"""A real Flower deployment on localhost: one SuperLink, five SuperNodes, one Byzantine.

This is the deployment path of ``docs/deployment.md``, run end to end with real processes:
``flower-superlink`` (deployment mode, not ``--simulation``), five ``flower-supernode``
processes that each start their own ClientApp subprocesses, and ``flwr run`` against a
SuperLink connection in a temporary ``FLWR_HOME``. One SuperNode is made Byzantine by its
node config (``byzantine=true attack='reverse'``), the way a real federation would mark
it; the deterministic code is perfectly 1-tolerant, so training must still make progress.

Every process is started in a session of its own. Flower starts further processes
(SuperExecs, ``flwr-serverapp``, one ``flwr-clientapp`` per message), the SuperLink's
SuperExec in a session of *its* own, so cleanup walks the process tree and also looks for
any process whose command line names one of this test's ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN_DIR = Path(sys.executable).parent
NUM_NODES = 5
BYZANTINE_NODE = NUM_NODES - 1
NUM_ROUNDS = 20
CONNECTION = "deploy"
RUN_NAME = "deploy"
#: Seconds the whole run may take; ClientApps import torch once per message, so a
#: round costs a few CPU-seconds per node (much more on a loaded 2-core machine).
RUN_DEADLINE_S = 3600.0
STARTUP_DEADLINE_S = 120.0


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free TCP ports on 127.0.0.1 (held open until all found)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment of every Flower process of the test."""
    env = dict(os.environ)
    env.update(
        {
            # Flower would otherwise `uv sync` the app's dependencies (torch: gigabytes)
            # into a fresh environment for the run; this venv already has them.
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_HOME": str(flwr_home),  # connections, installed FABs: nothing in ~/.flwr
            "FLWR_TELEMETRY_ENABLED": "0",  # offline machine, no network calls
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PATH": f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def children_map() -> dict[int, list[int]]:
    """Map every live pid to its child pids (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may contain spaces and parentheses: split after it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pids: list[int]) -> list[int]:
    """Return ``pids`` and all their descendants, parents first."""
    tree = children_map()
    found: list[int] = []
    stack = list(pids)
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.append(pid)
        stack.extend(tree.get(pid, []))
    return found


def is_alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def processes_naming_ports(ports: list[int]) -> list[int]:
    """Pids (pgrep) whose command line names one of ``ports`` (as ``--port P`` or ``:P``)."""
    alternatives = "|".join(str(p) for p in ports)
    pattern = rf"(--port |127\.0\.0\.1:)({alternatives})( |$)"
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    own = os.getpid()
    return [int(pid) for pid in out.stdout.split() if int(pid) != own and is_alive(int(pid))]


class Deployment:
    """Processes of one local deployment, with their log files; stops all of them."""

    def __init__(self, workdir: Path, ports: list[int]) -> None:
        self.workdir = workdir
        self.ports = ports
        self.flwr_home = workdir / "flwr-home"
        self.flwr_home.mkdir()
        self.env = flower_env(self.flwr_home)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def start(self, name: str, args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
        """Start one process in a new session, its output going to ``<name>.log``."""
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        self.logs[name] = log_path
        return proc

    def check_alive(self, names: list[str]) -> None:
        """Fail if one of the named long-running processes has exited."""
        for name in names:
            code = self.procs[name].poll()
            if code is not None:
                raise AssertionError(f"{name} exited early with code {code}")

    def dump_logs(self, tail_chars: int = 6000) -> None:
        """Print the end of every log (pytest shows it when the test fails)."""
        for name, path in self.logs.items():
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            print(f"\n===== {name} ({path}) =====\n{text[-tail_chars:]}")

    def stop(self) -> list[int]:
        """Stop every started process and everything it spawned; return survivors."""
        started = [proc.pid for proc in self.procs.values()]
        targets = set(descendants(started)) | set(processes_naming_ports(self.ports))
        for proc in self.procs.values():  # each one leads its own process group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        while time.monotonic() < deadline and any(is_alive(pid) for pid in targets):
            time.sleep(0.2)
        # Whatever ignored SIGTERM (or was started in the meantime) gets SIGKILL.
        targets |= set(processes_naming_ports(self.ports))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for pid in targets:
            if is_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        time.sleep(0.5)
        return [pid for pid in targets if is_alive(pid)] + processes_naming_ports(self.ports)


def wait_for_port(port: int, deployment: Deployment, name: str) -> None:
    """Wait until something accepts TCP connections on ``port``."""
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        deployment.check_alive([name])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"{name} did not open port {port} within {STARTUP_DEADLINE_S} s")


def node_config(index: int) -> str:
    """``--node-config`` of SuperNode ``index``: one node is marked Byzantine.

    The run uses ``byzantine-selection='node-config'``, so the unmarked nodes are honest.
    """
    base = f"partition-id={index} num-partitions={NUM_NODES}"
    if index == BYZANTINE_NODE:
        return f"{base} byzantine=true attack='reverse'"
    return base


@pytest.mark.slow
@pytest.mark.timeout(RUN_DEADLINE_S + 600)
def test_deployment_trains_through_a_byzantine_supernode(tmp_path: Path) -> None:
    link_port, *node_ports = free_ports(1 + NUM_NODES)
    output_dir = tmp_path / "outputs"
    result_path = output_dir / f"{RUN_NAME}.json"
    deployment = Deployment(tmp_path, [link_port, *node_ports])
    long_running = ["superlink", *(f"supernode-{i}" for i in range(NUM_NODES))]
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
            deployment.start(
                f"supernode-{i}",
                [
                    str(BIN_DIR / "flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{link_port}",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--node-config",
                    node_config(i),
                ],
                cwd=tmp_path,
            )
        for i, port in enumerate(node_ports):
            wait_for_port(port, deployment, f"supernode-{i}")

        (deployment.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f'[superlink.{CONNECTION}]\naddress = "127.0.0.1:{link_port}"\ninsecure = true\n'
        )
        # The learning rate is pinned so that the accuracy bar below does not move when
        # the defaults in pyproject.toml are tuned for the long experiments.
        run_config = (
            f"num-workers={NUM_NODES} byzantine-count=1 byzantine-selection='node-config' "
            "code='deterministic' "
            f"num-server-rounds={NUM_ROUNDS} eval-every=10 lr=0.003 lr-milestones='' "
            f"output-dir='{output_dir}' run-name='{RUN_NAME}'"
        )
        flwr_run = deployment.start(
            "flwr-run",
            [
                str(BIN_DIR / "flwr"),
                "run",
                ".",
                CONNECTION,
                "--run-config",
                run_config,
                "--stream",
            ],
            cwd=REPO_ROOT,
        )

        # The ServerApp writes the JSON as its last act; `flwr run --stream` ends with it.
        deadline = time.monotonic() + RUN_DEADLINE_S
        while not (result_path.exists() and flwr_run.poll() is not None):
            deployment.check_alive(long_running)
            if flwr_run.poll() is not None and not result_path.exists():
                time.sleep(2)  # the file may land just after the stream closed
                assert result_path.exists(), f"flwr run exited ({flwr_run.returncode}), no result"
            assert time.monotonic() < deadline, f"run unfinished after {RUN_DEADLINE_S} s"
            time.sleep(2)
        assert flwr_run.returncode == 0, f"flwr run exited with {flwr_run.returncode}"

        record = json.loads(result_path.read_text())
        assert record["config"]["num-workers"] == NUM_NODES
        assert record["config"]["code"] == "deterministic"
        assert record["code"]["certificate"]["verdict"] == "certified"
        assert record["byzantine_workers"] == "node-config"
        rounds = record["rounds"]
        assert [r["round"] for r in rounds] == list(range(1, NUM_ROUNDS + 1))
        # All five nodes voted every round, the Byzantine one included: a node config the
        # ClientApp could not use (say, an unknown attack) would turn its reply into an
        # error, which the strategy counts as rejected.
        for r in rounds:
            assert r["valid-votes"] == NUM_NODES, r
            assert r["rejected-replies"] == 0, r
            assert r["missing-replies"] == 0, r
        evaluated = [r["round"] for r in rounds if "test-accuracy" in r]
        assert evaluated == list(range(10, NUM_ROUNDS + 1, 10))
        initial = record["initial"]["test-accuracy"]
        final = record["final"]["test-accuracy"]
        assert final > 0.5, f"final test accuracy {final:.3f}"
        assert final > initial + 0.3, f"accuracy went from {initial:.3f} to {final:.3f}"

        # The streamed ServerApp log has no exception in it.
        run_log = deployment.logs["flwr-run"].read_text(errors="replace")
        assert "Traceback" not in run_log
        failed = False
    finally:
        if failed:
            deployment.dump_logs()
        survivors = deployment.stop()
        print(f"deployment test wall time: {time.monotonic() - started:.0f} s")
    assert not survivors, f"processes left behind: {survivors}"
