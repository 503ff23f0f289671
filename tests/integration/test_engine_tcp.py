"""Engines on TCP, as many users run them: a throw-away dockerd of this module's own listening on
tcp://127.0.0.1:<port> in plain HTTP, and another with ``--tlsverify`` and certificates made here with
openssl. registrar runs as users run it, with DOCKER_HOST=tcp://... (and DOCKER_TLS_VERIFY and
DOCKER_CERT_PATH as the docker CLI reads them), against the shared Consul agent."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import certifi
import docker
import docker.errors
import pytest

from tests.fleet import Process, kill_tree, unmount_under
from tests.integration.conftest import _container_factory
from tests.integration.harness import IMAGE, Consul, Daemon, free_port, pings, run_cli, wait_until

Run = Callable[..., Any]


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, made with openssl;
    the client's three files named as the docker CLI reads them from DOCKER_CERT_PATH."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    def key(name: str) -> None:
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name)

    key("ca-key.pem")
    openssl(
        "req", "-x509", "-new", "-key", "ca-key.pem", "-subj", "/CN=registrar test CA", "-days", "2", "-out", "ca.pem"
    )
    for name, subject, extensions in (
        ("server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "/CN=registrar", "extendedKeyUsage=clientAuth\n"),
    ):
        key(f"{name}-key.pem")
        openssl("req", "-new", "-key", f"{name}-key.pem", "-subj", subject, "-out", f"{name}.csr")
        (directory / f"{name}.ext").write_text(extensions)
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}-cert.pem",
        )  # fmt: skip
    client = directory / "client"
    client.mkdir()
    for source, target in (("ca.pem", "ca.pem"), ("client-cert.pem", "cert.pem"), ("client-key.pem", "key.pem")):
        shutil.copy(directory / source, client / target)
    return {
        "ca": directory / "ca.pem",
        "cert": directory / "server-cert.pem",
        "key": directory / "server-key.pem",
        "client": client,
    }


class TcpEngine:
    """A dockerd of this module's own on tcp://127.0.0.1:<port> (with ``--tlsverify`` when given certificates),
    on its own data and exec roots, bridge and subnet, as tests/fleet.py runs its hosts' engines. It also
    serves a unix socket in its root, on which the tests set up containers."""

    def __init__(self, root: Path, n: int, certificates: dict[str, Path] | None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.bridge = f"regtcp{n}"
        self.subnet = f"172.29.{40 + n}.1/24"
        self.socket = root / "docker.sock"
        self.port = free_port()
        self.url = f"tcp://127.0.0.1:{self.port}"
        args = ["dockerd", "-H", f"unix://{self.socket}", "-H", self.url, "--pidfile", str(root / "docker.pid")]
        args += ["--data-root", str(root / "data"), "--exec-root", str(root / "exec")]
        args += ["--bridge", self.bridge, "--ip", "127.0.0.1", "--iptables=false"]
        self.env = {"DOCKER_HOST": self.url, "DOCKER_TLS_VERIFY": "", "DOCKER_CERT_PATH": ""}
        """The environment registrar runs in against this engine, as a docker CLI user's would be."""
        if certificates is None:
            args += ["--tls=false"]  # plain HTTP said outright (newer engines refuse plain TCP without it)
        else:
            args += ["--tlsverify", "--tlscacert", str(certificates["ca"])]
            args += ["--tlscert", str(certificates["cert"]), "--tlskey", str(certificates["key"])]
            self.env.update(DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(certificates["client"]))
            # As on many machines (this project's among them): a CA bundle for requests that does not hold
            # the engine's CA. DOCKER_CERT_PATH's ca.pem decides, as it does for the docker CLI.
            self.env.update(REQUESTS_CA_BUNDLE=certifi.where(), CURL_CA_BUNDLE=certifi.where())
        self.process = Process(f"dockerd {self.url}", args, root / "dockerd.log")
        self.client: docker.DockerClient | None = None

    def start(self) -> None:
        if not Path(f"/sys/class/net/{self.bridge}").exists():
            for cmd in (
                ["ip", "link", "add", self.bridge, "type", "bridge"],
                ["ip", "addr", "add", self.subnet, "dev", self.bridge],
                ["ip", "link", "set", self.bridge, "up"],
            ):
                subprocess.run(cmd, check=True, capture_output=True)
        self.process.start()
        wait_until(lambda: pings(self.socket) or self.process.pid is None, f"dockerd on {self.url} to answer", 60)
        assert self.process.pid is not None, f"dockerd on {self.url} exited: see {self.process.log}"
        if self.client is None:
            self.client = docker.DockerClient(base_url=f"unix://{self.socket}", timeout=60)

    def restart(self) -> None:
        """Stop the engine (every event stream on it ends, its containers stop) and start it again."""
        self.process.stop(timeout=30)
        self.start()

    def close(self) -> None:
        """Remove its containers; stop it, whatever it left (shims, mounts) and its bridge; close the client."""
        try:
            if self.client is not None and pings(self.socket):
                for c in self.client.containers.list(all=True):
                    with contextlib.suppress(docker.errors.NotFound):
                        c.remove(force=True)
            self.process.stop(timeout=30)
            kill_tree([], mentioning=str(self.root) + "/")
        finally:
            if self.client is not None:
                self.client.close()
            unmount_under(self.root)
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def image_tar(docker_client: docker.DockerClient) -> bytes:
    """The test image as ``docker save`` writes it, from the engine the suite runs on."""
    return b"".join(docker_client.images.get(IMAGE).save(named=True))


@pytest.fixture(scope="module", params=["plain", "tls"])
def engine(request: pytest.FixtureRequest, image_tar: bytes) -> Iterator[TcpEngine]:
    """A started dockerd on TCP, in plain HTTP or with --tlsverify, with the test image loaded; removed
    with all it made afterwards."""
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="registrar-tcp-"))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        tls = request.param == "tls"
        certificates = make_certificates(root / "certs") if tls else None
        made = TcpEngine(root / "engine", 1 if tls else 0, certificates)
        stack.callback(made.close)
        made.start()
        assert made.client is not None
        made.client.images.load(image_tar)
        yield made


@pytest.fixture
def tcp_containers(engine: TcpEngine) -> Iterator[Run]:
    """Start test containers on the TCP engine; every one is removed afterwards."""
    assert engine.client is not None
    yield from _container_factory(engine.client)


def registered(consul: Consul, host: str, *containers: Any) -> bool:
    return set(consul.services(host)) == {f"{host}:{c.name}:80" for c in containers}


def check_of(consul: Consul, service_id: str) -> dict[str, Any]:
    return {c["CheckID"]: c for c in consul.checks(service_id)}.get(f"service:{service_id}", {})


def test_sync_registers_a_running_container(host: str, consul: Consul, engine: TcpEngine, tcp_containers: Run) -> None:
    """``registrar sync`` with DOCKER_HOST=tcp://... registers a container running on that engine and exits 0."""
    c = tcp_containers()
    result = run_cli("sync", "--hostname", host, env=engine.env)
    assert result.returncode == 0, result.stderr
    assert registered(consul, host, c)


def test_started_container_registered_and_removed_one_deregistered(
    host: str, consul: Consul, engine: TcpEngine, tcp_containers: Run, daemon: Callable[..., Daemon]
) -> None:
    """``registrar run`` on the TCP engine registers a container started after it and deregisters it once removed."""
    daemon("--hostname", host, env=engine.env)
    c = tcp_containers()
    wait_until(lambda: registered(consul, host, c), "the started container registered")
    c.remove(force=True)
    wait_until(lambda: registered(consul, host), "the removed container deregistered")


def test_events_followed_after_the_engine_restarts(
    host: str, consul: Consul, engine: TcpEngine, tcp_containers: Run, daemon: Callable[..., Daemon]
) -> None:
    """After the dockerd on TCP stops and starts again, registrar reconnects: the container the restart stopped
    leaves, and one started afterwards is registered."""
    before = tcp_containers()
    d = daemon("--hostname", host, env=engine.env)
    wait_until(lambda: registered(consul, host, before), "the first container registered")
    engine.restart()
    d.wait_for_event("docker_stream_reconnected", timeout=60)
    after = tcp_containers()
    wait_until(lambda: registered(consul, host, after), "only the container started after the restart registered")


def check_becomes(consul: Consul, service_id: str, status: str, output: str, what: str) -> dict[str, Any]:
    """Wait for the service's check to have ``status`` and ``output`` in its output; fail showing the check."""
    try:
        wait_until(
            lambda: (
                (check := check_of(consul, service_id)).get("Status") == status and output in check.get("Output", "")
            ),
            what,
        )
    except AssertionError as e:
        raise AssertionError(f"{e}; the check: {check_of(consul, service_id)}") from None
    return check_of(consul, service_id)


def peak_rss_mib(pid: int) -> float:
    """The most memory a process has had resident (VmHWM), in MiB."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def test_exec_probe_cut_at_its_timeout(
    host: str, consul: Consul, engine: TcpEngine, tcp_containers: Run, daemon: Callable[..., Daemon]
) -> None:
    """On the TCP engine an exec probe that outlives CHECK_TIMEOUT turns its check critical, saying it timed out."""
    c = tcp_containers(
        labels={"SERVICE_CHECK_EXEC": "sleep 30", "SERVICE_CHECK_INTERVAL": "1s", "SERVICE_CHECK_TIMEOUT": "500ms"}
    )
    daemon("--hostname", host, env=engine.env)
    check_becomes(consul, f"{host}:{c.name}:80", "critical", "timed out after 0.5s", "the check critical: timed out")


def test_exec_probe_output_capped(
    host: str, consul: Consul, engine: TcpEngine, tcp_containers: Run, daemon: Callable[..., Daemon]
) -> None:
    """On the TCP engine a probe printing 100 KB and exiting 0 passes, its output cut at CHECK_OUTPUT_MAX_SIZE."""
    c = tcp_containers(
        labels={
            "SERVICE_CHECK_EXEC": "sh -c 'echo start; yes | head -c 100000'",
            "SERVICE_CHECK_INTERVAL": "1s",
            "SERVICE_CHECK_OUTPUT_MAX_SIZE": "64",
        }
    )
    daemon("--hostname", host, env=engine.env)
    check = check_becomes(consul, f"{host}:{c.name}:80", "passing", "start", "the check passing")
    assert len(check["Output"]) == 64


def test_exec_probe_output_beyond_the_cap_is_not_kept(
    host: str, consul: Consul, engine: TcpEngine, tcp_containers: Run, daemon: Callable[..., Daemon]
) -> None:
    """On the TCP engine a probe printing 64 MB passes with capped output, and registrar never holds the 64 MB:
    its peak resident memory stays under 100 MiB (about 40 at rest)."""
    c = tcp_containers(
        labels={
            "SERVICE_CHECK_EXEC": "sh -c 'echo start; yes | head -c 64000000'",
            "SERVICE_CHECK_INTERVAL": "10s",
            "SERVICE_CHECK_OUTPUT_MAX_SIZE": "64",
        }
    )
    d = daemon("--hostname", host, env=engine.env)
    check = check_becomes(consul, f"{host}:{c.name}:80", "passing", "start", "the check passing")
    assert len(check["Output"]) == 64
    assert peak_rss_mib(d.proc.pid) < 100
