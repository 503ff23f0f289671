"""What the commands do once their options are parsed: connect to Docker and Consul, then run the daemon
(``run``), reconcile once (``sync``), print the plan (``plan``) or explain one container (``explain``)."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import structlog

from registrar import __version__, logs
from registrar.errors import ConfigError, ConsulError, DockerError
from registrar.lifecycle import ExitCode, Shutdown, capture_signals, retry_at_start
from registrar.model import Deregister, Register
from registrar.options import build_settings
from registrar.settings import Settings

if TYPE_CHECKING:
    from registrar.adapters import ServiceSink
    from registrar.daemon import Daemon
    from registrar.metrics import HealthServer

log = structlog.get_logger("registrar")
CONTAINER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""What Docker accepts as a container's name or ID (prefix); anything else names no container."""
T = TypeVar("T")


def fail(code: ExitCode, message: str) -> NoReturn:
    """One line on stderr, then exit with ``code``."""
    click.echo(f"registrar: {message}", err=True)
    sys.exit(code)


def _connect(
    params: Mapping[str, Any], shutdown: Shutdown, keep_node: bool = False
) -> tuple[Settings, Any, Any] | None:
    """Settings, Docker and Consul adapters, with the hostname resolved; exits on failure.

    Waits for Docker, then for Consul, ``--retry-attempts`` times each; None when a shutdown
    was requested meanwhile. ``keep_node`` (``run``): with ``--catalog``, the host's node is kept alive by a
    Consul session until the sink is closed, and dead hosts' nodes are removed (registrar.catalog_liveness).
    """
    from registrar.consul_sink import ConsulSink
    from registrar.docker_source import DockerSource

    environ = dict(os.environ)
    try:
        settings = build_settings(params, environ)
    except ConfigError as e:
        fail(ExitCode.CONFIG, str(e))
    logs.configure(settings.log_format, settings.log_level)

    def docker() -> tuple[DockerSource, str]:
        source = DockerSource(settings, environ)
        return source, settings.hostname or source.host_name()

    attempts, interval = settings.retry_attempts, settings.retry_interval_ms
    try:
        found = retry_at_start("docker", docker, DockerError, attempts, interval, shutdown)
        if found is None:
            return None
        source, hostname = found
        if hostname in settings.forget_hosts:
            fail(ExitCode.USAGE, f"--forget-host {hostname}: that is this host itself")
        settings = dataclasses.replace(settings, hostname=hostname)
        if settings.catalog:  # this host an external node of the catalog: no agent here
            from registrar.catalog_sink import CatalogSink, catalog_node

            catalog = CatalogSink(settings.consul, catalog_node(hostname, settings.ip, settings.instance))
            sink: ServiceSink = catalog
        else:
            sink = ConsulSink(settings.consul)

        def reach() -> bool:
            """Consul answers (and with ``keep_node``, this host's node is held): one budget of attempts for both."""
            sink.services()
            if settings.catalog and keep_node:
                catalog.hold_node(settings.node_ttl)
            return True

        if retry_at_start("consul", reach, ConsulError, attempts, interval, shutdown) is None:
            return None
    except ConfigError as e:
        fail(ExitCode.CONFIG, str(e))
    except DockerError as e:
        fail(ExitCode.DOCKER, str(e))
    except ConsulError as e:
        fail(ExitCode.CONSUL, str(e))
    return settings, source, sink


def run(params: Mapping[str, Any]) -> None:
    """``registrar run``: the daemon, until SIGTERM/SIGINT."""
    from registrar.daemon import Daemon

    shutdown = Shutdown()
    with capture_signals(shutdown):
        connected = _connect(params, shutdown, keep_node=True)
        if connected is None:  # stopped while waiting for Docker or Consul
            sys.exit(ExitCode.OK)
        settings, source, sink = connected
        daemon = Daemon(source, sink, settings, shutdown=shutdown)
        s = settings
        # What start-up made (modules, clients) lives as long as the process: the collector skips it
        # from now on, so a full collection during a burst walks only what the daemon made since. No
        # collection first: it would cost the cold start 15-20 ms to free a few imports' leftovers.
        gc.freeze()
        server = _serve_health(settings.metrics_addr, daemon)
        log.info(
            "registrar_started",
            version=__version__,
            hostname=settings.hostname,
            consul=settings.consul.describe(),
            docker=source.where,
            **{k: v for k, v in (("ip", s.ip), ("wan_ip", s.wan_ip), ("instance", s.instance)) if v},
            **({"catalog_node": s.hostname} if s.catalog else {}),
        )
        try:
            daemon.run()
        finally:
            if server is not None:
                server.stop()
            source.close()
            sink.close()
    sys.exit(ExitCode.OK)


def _serve_health(addr: str, daemon: Daemon) -> HealthServer | None:
    """Start the metrics/health server; a taken port is logged, and registrar runs on without it."""
    from registrar.metrics import HealthServer, Metrics

    if not addr or not isinstance(daemon.metrics, Metrics):  # the daemon counts when there is an address
        return None
    try:
        server = HealthServer(addr, daemon.metrics, daemon.unhealthy, daemon.not_ready)
    except (OSError, ValueError) as e:
        log.error("metrics_unavailable", address=addr, error=str(e))
        return None
    server.start()
    return server


def _connected(params: Mapping[str, Any], work: Callable[[Settings, Any, Any], T]) -> T:
    """Connect, and run ``work(settings, source, sink)``; exits on Docker or Consul errors."""
    connected = _connect(params, Shutdown())
    assert connected is not None, "nothing requests a shutdown of a one-shot command"
    settings, source, sink = connected
    try:
        return work(settings, source, sink)
    except DockerError as e:
        fail(ExitCode.DOCKER, str(e))
    except ConsulError as e:
        fail(ExitCode.CONSUL, str(e))
    finally:
        source.close()
        sink.close()


def _one_shot(params: Mapping[str, Any], work: Callable[[Any], T]) -> T:
    """Connect, and run ``work(daemon)`` on a loop that turns once; exits on Docker or Consul errors."""
    from registrar.daemon import Daemon

    def on_a_daemon(settings: Settings, source: Any, sink: Any) -> T:
        daemon = Daemon(source, sink, settings)
        try:
            return work(daemon)
        finally:
            daemon.close()

    return _connected(params, on_a_daemon)


def sync(params: Mapping[str, Any]) -> None:
    """``registrar sync``: reconcile once, print the counts, exit 0 only when Consul is in sync."""
    outcome = _one_shot(params, lambda daemon: daemon.sync())
    click.echo(
        f"registered {outcome.registered}, deregistered {outcome.deregistered}, "
        f"failed {outcome.failed}, rejected by Consul {outcome.rejected}"
    )
    sys.exit(ExitCode.NOT_IN_SYNC if outcome.failed or outcome.rejected else ExitCode.OK)


def plan(params: Mapping[str, Any], as_json: bool) -> None:
    """``registrar plan``: print what sync would change, as lines or as JSON."""
    actions = _one_shot(params, lambda daemon: daemon.plan())
    if as_json:
        rows: list[dict[str, Any]] = []
        for action in actions:
            if isinstance(action, Register):
                rows.append({"action": "register", "id": action.service_id, "service": action.service.to_consul()})
            else:
                rows.append({"action": "deregister", "id": action.service_id, "reason": action.reason})
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for action in actions:
        if isinstance(action, Register):
            click.echo(f"register    {action.service_id}  {_describe(action.service)}")
        elif isinstance(action, Deregister):
            click.echo(f"deregister  {action.service_id}  ({action.reason})")
    if not actions:
        click.echo("in sync: nothing to change")


def explain(container: str, as_json: bool, params: Mapping[str, Any]) -> None:
    """``registrar explain``: why the container yields what it yields, and what the agent holds of it."""
    from registrar.addresses import network_owner
    from registrar.explain import explain as explain_container
    from registrar.explain import render

    wanted = container.strip().removeprefix("/")  # docker ps shows no slash, docker inspect's Name has one
    if not wanted:
        raise click.UsageError("CONTAINER is empty: give a container's name or ID")

    def look(settings: Settings, source: Any, sink: Any) -> Any:
        found = source.inspect(wanted) if CONTAINER_NAME.match(wanted) else None
        if found is None:
            fail(ExitCode.NOT_FOUND, f"no such container: {container}")
        owner_ref = network_owner(found) if settings.internal else ""
        return explain_container(found, settings, sink.services(), source.inspect(owner_ref) if owner_ref else None)

    explanation = _connected(params, look)
    if as_json:
        click.echo(json.dumps(explanation.to_json(), indent=2, ensure_ascii=False))
    else:
        click.echo(render(explanation))


def _describe(s: Any) -> str:
    """One plan line's fields: name, address and port, then whatever else the registration carries."""
    words = [f"name={s.name}", f"address={s.address or '(agent)'}", f"port={s.port}"]
    words += [f"{kind}={addr}:{port}" for kind, addr, port in s.tagged_addresses if (addr, port) != (s.address, s.port)]
    if s.health is not None:
        words.append(f"docker-health={s.health.status}")
    if s.enable_tag_override:
        words.append("enable-tag-override")
    if s.tags:  # as registered: templates rendered
        words.append("tags=" + json.dumps(list(s.tags), ensure_ascii=False, separators=(",", ":")))
    return " ".join(words)
