"""A secured Flower deployment on localhost: TLS, SuperNode authentication, intruders refused.

The secured path of ``docs/deployment.md``, run end to end with real processes. The test makes
its own CA, a SuperLink certificate for ``localhost`` / ``127.0.0.1`` signed by it, and one
ECDSA (P-384, OpenSSH format) key pair per SuperNode. It starts ``flower-superlink`` with TLS
and ``--enable-supernode-auth``, registers the authorised SuperNodes' public keys through the
Control API (``flwr supernode register``), starts three registered ``flower-supernode``
processes and three that must not get in:

- ``rogue``: TLS with the right CA, but its key was never registered. The SuperLink answers
  its ActivateNode with ApiError 2004 and the SuperNode exits (Flower exit code 305, process
  exit status 1).
- ``no-root-cert``: a *registered* key, but no ``--root-certificates``: the system trust store
  does not know the test CA, the TLS handshake fails (``CERTIFICATE_VERIFY_FAILED``) and it
  exits (305).
- ``insecure``: plain HTTP (``--insecure``) against the HTTPS port: the SuperLink drops the
  connection; with bounded retries it gives up and exits (305). (An ``--insecure`` SuperNode
  *with* an auth key is refused locally, exit code 303, before it ever connects.)

Then a two-round training run goes through TLS (``flwr run`` with ``root-certificates`` in
the connection), and only the three registered SuperNodes ever appear online.

Processes are started, and stopped by pid, with the helpers of ``tests/test_deployment.py``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from test_deployment import BIN_DIR, REPO_ROOT, Deployment, free_ports, wait_for_port

NUM_NODES = 3
NUM_ROUNDS = 2
CONNECTION = "tls"
RUN_NAME = "tls"
#: Seconds the two-round run may take (a fresh ClientApp process, importing torch, per
#: message; slow on a loaded 2-core machine).
RUN_DEADLINE_S = 1500.0
#: Seconds within which a refused SuperNode must have exited, and registered ones be online.
JOIN_DEADLINE_S = 240.0
CLI_TIMEOUT_S = 120.0


# ------------------------------------------------------------------ certificates and keys


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """Write a CA (``ca.crt``) and a SuperLink certificate and key signed by it.

    The certificate names ``localhost`` and ``127.0.0.1``: SuperNodes and ``flwr`` connect to
    ``127.0.0.1`` here, and the SuperLink's own SuperExec / ServerApp always do.
    """
    folder.mkdir()
    now = datetime.datetime.now(datetime.UTC)
    valid_from, valid_to = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fl-election test CA"))
        .issuer_name(_name("fl-election test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("superlink"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.crt", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


def make_node_key(folder: Path, name: str) -> tuple[Path, Path]:
    """Write an ECDSA P-384 key pair as ``ssh-keygen -t ecdsa -b 384`` would (OpenSSH format).

    ``flower-supernode --auth-supernode-private-key`` reads the private key, ``flwr supernode
    register`` the ``.pub`` file.
    """
    folder.mkdir(exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private_path, public_path = folder / name, folder / f"{name}.pub"
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b" "
        + name.encode()
        + b"\n"
    )
    return private_path, public_path


# ------------------------------------------------------------------------------ flwr CLI


def flwr_json(deployment: Deployment, *args: str) -> dict[str, Any]:
    """Run ``flwr <args> --format json`` against the test's connection; return its JSON."""
    result = subprocess.run(
        [str(BIN_DIR / "flwr"), *args, CONNECTION, "--format", "json"],
        cwd=deployment.workdir,
        env=deployment.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, (
        f"flwr {args}: {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    out = result.stdout
    reply: dict[str, Any] = json.loads(out[out.index("{") : out.rindex("}") + 1])
    return reply


def node_statuses(deployment: Deployment) -> dict[int, str]:
    """``flwr supernode ls``: node id -> status of every node the SuperLink knows."""
    listing = flwr_json(deployment, "supernode", "ls")
    assert listing["success"], listing
    return {int(node["node-id"]): node["status"] for node in listing["nodes"]}


def wait_for_exit(deployment: Deployment, name: str, keep_alive: list[str]) -> int:
    """Wait until process ``name`` exits; return its exit status."""
    proc = deployment.procs[name]
    deadline = time.monotonic() + JOIN_DEADLINE_S
    while proc.poll() is None:
        deployment.check_alive(keep_alive)
        assert time.monotonic() < deadline, f"{name} still running after {JOIN_DEADLINE_S} s"
        time.sleep(1)
    return proc.returncode


@pytest.mark.slow
@pytest.mark.timeout(RUN_DEADLINE_S + 2 * JOIN_DEADLINE_S + 600)
def test_tls_deployment_refuses_unregistered_supernodes(tmp_path: Path) -> None:
    ca_path, cert_path, key_path = make_tls_files(tmp_path / "certs")
    keys_dir = tmp_path / "keys"
    node_keys = [make_node_key(keys_dir, f"supernode{i}") for i in range(NUM_NODES)]
    rogue_key, _ = make_node_key(keys_dir, "rogue")  # never registered
    spare_key, spare_pub = make_node_key(keys_dir, "spare")  # registered, used without the CA

    link_port, *node_ports = free_ports(1 + NUM_NODES + 3)
    rogue_port, no_cert_port, insecure_port = node_ports[NUM_NODES:]
    output_dir = tmp_path / "out"
    result_path = output_dir / f"{RUN_NAME}.json"
    deployment = Deployment(tmp_path, [link_port, *node_ports])
    nodes = [f"supernode-{i}" for i in range(NUM_NODES)]
    long_running = ["superlink", *nodes]
    superlink = f"127.0.0.1:{link_port}"
    failed = True
    started = time.monotonic()
    try:
        deployment.start(
            "superlink",
            [
                str(BIN_DIR / "flower-superlink"),
                "--ssl-ca-certfile",
                str(ca_path),
                "--ssl-certfile",
                str(cert_path),
                "--ssl-keyfile",
                str(key_path),
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",
                "--host",
                "127.0.0.1",
                "--port",
                str(link_port),
            ],
            cwd=tmp_path,
        )
        wait_for_port(link_port, deployment, "superlink")
        (deployment.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f'[superlink.{CONNECTION}]\naddress = "{superlink}"\n'
            f'root-certificates = "{ca_path}"\n'
        )

        # Register the authorised public keys (Control API, over TLS) before the nodes start.
        registered = []
        for _, public_path in [*node_keys, (spare_key, spare_pub)]:
            reply = flwr_json(deployment, "supernode", "register", str(public_path))
            assert reply["success"], reply
            registered.append(int(reply["node-id"]))
        node_ids, spare_id = set(registered[:NUM_NODES]), registered[NUM_NODES]
        assert node_statuses(deployment) == dict.fromkeys(registered, "registered")

        tls_args = ["--root-certificates", str(ca_path), "--superlink", superlink]
        for i, (private_path, _) in enumerate(node_keys):
            deployment.start(
                nodes[i],
                [
                    str(BIN_DIR / "flower-supernode"),
                    *tls_args,
                    "--auth-supernode-private-key",
                    str(private_path),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(node_ports[i]),
                    "--node-config",
                    f"partition-id={i} num-partitions={NUM_NODES}",
                ],
                cwd=tmp_path,
            )
        supernode = str(BIN_DIR / "flower-supernode")
        intruder_config = ["--node-config", f"partition-id={NUM_NODES} num-partitions={NUM_NODES}"]
        # Right CA, unregistered key.
        deployment.start(
            "rogue",
            [
                supernode,
                *tls_args,
                "--auth-supernode-private-key",
                str(rogue_key),
                "--port",
                str(rogue_port),
                *intruder_config,
            ],
            cwd=tmp_path,
        )
        # Registered key, but the test CA is not trusted (system certificates only).
        deployment.start(
            "no-root-cert",
            [
                supernode,
                "--superlink",
                superlink,
                "--auth-supernode-private-key",
                str(spare_key),
                "--port",
                str(no_cert_port),
                *intruder_config,
            ],
            cwd=tmp_path,
        )
        # Plain HTTP against the HTTPS port; it would retry for ever, so bound the retries.
        deployment.start(
            "insecure",
            [
                supernode,
                "--insecure",
                "--superlink",
                superlink,
                "--max-retries",
                "3",
                "--max-wait-time",
                "60",
                "--port",
                str(insecure_port),
                *intruder_config,
            ],
            cwd=tmp_path,
        )

        # Every intruder is refused: it exits with an error (Flower exit code 305, which
        # flwr_exit turns into process exit status 1) and says why.
        expected_reason = {
            "rogue": "Failed to activate SuperNode",
            "no-root-cert": "CERTIFICATE_VERIFY_FAILED",
            "insecure": "Failed to initialize the connection to the SuperLink",
        }
        for name, reason in expected_reason.items():
            code = wait_for_exit(deployment, name, long_running)
            log = deployment.logs[name].read_text(errors="replace")
            assert code != 0, f"{name} exited with {code}"
            assert "Exit Code: 305" in log, f"{name}: no exit code 305 in its log"
            assert reason in log, f"{name}: {reason!r} not in its log"
        link_log = deployment.logs["superlink"].read_text(errors="replace")
        assert "No SuperNode found with the given public key" in link_log

        # The registered SuperNodes come online; the spare key (used without the CA) does not,
        # and the rogue key never became a node at all.
        deadline = time.monotonic() + JOIN_DEADLINE_S
        while True:
            deployment.check_alive(long_running)
            statuses = node_statuses(deployment)
            online = {node for node, status in statuses.items() if status == "online"}
            if online == node_ids:
                break
            assert online <= node_ids, f"an unregistered node is online: {statuses}"
            assert time.monotonic() < deadline, f"nodes not online in time: {statuses}"
            time.sleep(3)
        assert set(statuses) == set(registered), statuses
        assert statuses[spare_id] == "registered", statuses

        # A short training run through TLS.
        run_config = (
            f"num-workers={NUM_NODES} byzantine-count=0 attack='none' code='uncoded' "
            f"num-server-rounds={NUM_ROUNDS} eval-every=1 num-partitions=0 batch-size=60 "
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
        rounds = record["rounds"]
        assert [r["round"] for r in rounds] == list(range(1, NUM_ROUNDS + 1))
        for r in rounds:
            assert r["valid-votes"] == NUM_NODES, r
            assert r["rejected-replies"] == 0, r
            assert r["missing-replies"] == 0, r
        run_log = deployment.logs["flwr-run"].read_text(errors="replace")
        assert "Traceback" not in run_log

        # Still exactly the registered nodes online, nobody else known to the SuperLink.
        statuses = node_statuses(deployment)
        assert {n for n, s in statuses.items() if s == "online"} == node_ids, statuses
        assert set(statuses) == set(registered), statuses
        failed = False
    finally:
        if failed:
            deployment.dump_logs()
        survivors = deployment.stop()
        print(f"TLS deployment test wall time: {time.monotonic() - started:.0f} s")
    assert not survivors, f"processes left behind: {survivors}"
