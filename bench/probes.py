"""What exec probes cost: N containers with ``SERVICE_CHECK_EXEC`` at an interval, registrar running them.

Prints a table; asserts nothing. Run it through bench/run-probes.sh (the engine and agent as
tests/run.sh brings them up). Over a window of steady probing it measures the probes run (registrar's
``registrar_probe_runs_total``), registrar's CPU, the engine's CPU (dockerd, containerd and the
shims: an exec starts a process through all three), and the writes to the agent. Each probe is three
Docker requests by construction: ``POST /containers/<id>/exec``, ``POST /exec/<id>/start`` and
``GET /exec/<id>/json``.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import requests

from bench.bench import CONSUL, IMAGE, LABEL, Registrar, cpu_seconds, wait_until


def engine_pids() -> list[int]:
    """dockerd, containerd and the containerd shims, from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if name in ("dockerd", "containerd") or name.startswith("containerd-shim"):
                pids.append(int(entry.name))
    return pids


def engine_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # a shim that ended meanwhile
            total += cpu_seconds(pid)
    return total


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in Prometheus text."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    client = docker.from_env(max_pool_size=16)
    http = requests.Session()
    host = f"bench-probes-{uuid.uuid4().hex[:6]}"
    labels = {LABEL: "1", "SERVICE_CHECK_EXEC": "true", "SERVICE_CHECK_INTERVAL": args.interval}
    made: list[Any] = []

    def run(i: int) -> Any:
        c = client.containers.run(
            IMAGE, name=f"{host}-{i}", labels=labels, ports={"80/tcp": ("127.0.0.1", None)}, detach=True,
            stop_signal="SIGKILL",
        )  # fmt: skip
        made.append(c)
        return c

    with tempfile.TemporaryDirectory() as tmp:
        reg: Registrar | None = None
        try:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(run, range(args.containers)))
            reg = Registrar(host, Path(tmp), "--metrics-addr", "127.0.0.1:19311")

            def checks() -> dict[str, Any]:
                every = http.get(CONSUL + "/v1/agent/checks", timeout=10).json()
                return {k: v for k, v in every.items() if v.get("ServiceID", "").startswith(host + ":")}

            wait_until(
                lambda: len([c for c in checks().values() if c["Status"] == "passing"]) == args.containers,
                "every exec check passing",
            )
            pids = engine_pids()
            metrics_url = "http://127.0.0.1:19311/metrics"
            before = http.get(metrics_url, timeout=10).text
            cpu0, engine0, t0 = reg.cpu_seconds(), engine_cpu(pids), time.monotonic()
            time.sleep(args.seconds)  # the measured window: steady probing, nothing else happening
            cpu1, engine1, t1 = reg.cpu_seconds(), engine_cpu(pids), time.monotonic()
            after = http.get(metrics_url, timeout=10).text
            runs = metric(after, "registrar_probe_runs_total") - metric(before, "registrar_probe_runs_total")
            writes = metric(after, "registrar_consul_operations_total") - metric(
                before, "registrar_consul_operations_total"
            )
            window = t1 - t0
            print(f"exec probes: {args.containers} containers, SERVICE_CHECK_INTERVAL={args.interval}, {window:.1f} s")
            rows = [
                ("probes run per second", f"{runs / window:.1f}"),
                ("registrar CPU per probe", f"{(cpu1 - cpu0) / runs * 1000:.2f} ms"),
                ("registrar CPU, share of one core", f"{(cpu1 - cpu0) / window * 100:.1f} %"),
                ("engine CPU per probe (dockerd, containerd, shims)", f"{(engine1 - engine0) / runs * 1000:.2f} ms"),
                ("engine CPU, share of one core", f"{(engine1 - engine0) / window * 100:.1f} %"),
                ("Docker requests per probe", "3"),
                ("writes to the agent per probe (status unchanged)", f"{writes / runs:.3f}"),
            ]
            for what, figure in rows:
                print(f"  {what:<52} {figure:>12}")
        finally:
            if reg is not None:
                reg.stop()
            for c in made:
                c.remove(force=True)
            services = http.get(CONSUL + "/v1/agent/services", timeout=10).json()
            for sid, body in services.items():
                if (body.get("Meta") or {}).get("registrar-host") == host:
                    http.put(f"{CONSUL}/v1/agent/service/deregister/{sid}", timeout=10)


if __name__ == "__main__":
    main()
