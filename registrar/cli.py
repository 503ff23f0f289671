"""The command line: a thin click layer over a frozen Settings.

``registrar run|sync|plan [OPTIONS] [REGISTRY_URI]``. Every option also comes from
``REGISTRAR_<OPTION>``; a flag beats the environment. registrator's single-dash spellings
(``-ip``, ``-internal``, ``-useIpFromLabel`` ...) are accepted too, and a command line with no
command runs the daemon, so registrar can stand in for registrator as it is invoked today.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from enum import IntEnum
from typing import Any, NoReturn

import click
import structlog

from registrar import __version__, logs
from registrar.errors import ConfigError, ConsulError, DockerError, RegistrarError
from registrar.model import Deregister, Register
from registrar.settings import DEREGISTER_MODES, Settings, parse_registry_uri

log = structlog.get_logger("registrar")
COMMANDS = ("run", "sync", "plan")


class ExitCode(IntEnum):
    OK = 0
    NOT_IN_SYNC = 1
    USAGE = 2
    CONFIG = 3
    DOCKER = 4
    CONSUL = 5


def _opt(name: str, *aliases: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    env = "REGISTRAR_" + name.upper().replace("-", "_")
    return click.option(f"--{name}", *aliases, envvar=env, show_default=True, show_envvar=True, **kwargs)


SHARED_OPTIONS = [
    _opt("hostname", default="", help="Host identity in service IDs and ownership Meta [default: docker info Name]"),
    _opt("ip", "-ip", default="", help="Address to register for published ports."),
    _opt("internal", "-internal", is_flag=True, help="Register container addresses and exposed ports."),
    _opt("explicit", "-explicit", is_flag=True, help="Only containers/ports with SERVICE_NAME or SERVICE_<port>_NAME."),
    _opt("tags", "-tags", default="", help="Comma-separated tags added to every service."),
    _opt("resync", "-resync", type=click.IntRange(min=0), default=0, help="Seconds between full reconciles (0: off)."),
    _opt(
        "cleanup", "-cleanup", is_flag=True, help="Accepted for compatibility: stale registrations are always removed."
    ),
    _opt(
        "deregister",
        "-deregister",
        type=click.Choice(DEREGISTER_MODES),
        default="always",
        help="On container exit: always deregister, or only when it exited 0.",
    ),
    _opt(
        "retry-attempts",
        "-retry-attempts",
        type=click.IntRange(min=-1),
        default=10,
        help="Attempts to reach Consul at start (-1: forever).",
    ),
    _opt(
        "retry-interval",
        "-retry-interval",
        type=click.IntRange(min=1),
        default=1000,
        help="Milliseconds between attempts to reach Consul at start.",
    ),
    _opt(
        "ttl",
        "-ttl",
        type=click.IntRange(min=0),
        default=0,
        help="Seconds of a TTL check registrar keeps passing (0: none).",
    ),
    _opt(
        "ttl-refresh",
        "-ttl-refresh",
        type=click.IntRange(min=0),
        default=0,
        help="Seconds between TTL passes (0: half the TTL).",
    ),
    _opt(
        "use-ip-from-label", "-useIpFromLabel", default="", help="Container label that holds the address to register."
    ),
    _opt("allow-script-checks", is_flag=True, help="Allow SERVICE_CHECK_SCRIPT (commands run by the Consul agent)."),
    _opt("docker-host", default="", help="Docker endpoint [default: DOCKER_HOST, else the local socket]"),
    _opt(
        "log-format",
        type=click.Choice(["auto", "console", "json"]),
        default="auto",
        help="Log format; auto is console on a terminal, JSON otherwise.",
    ),
    _opt("log-level", type=click.Choice(logs.LEVELS), default="info", help="Lowest level logged."),
]


def shared_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.argument("registry_uri", required=False, envvar="REGISTRAR_REGISTRY_URI")(fn)
    for option in reversed(SHARED_OPTIONS):
        fn = option(fn)
    return fn


def build_settings(params: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Settings from the parsed options and the environment; raises ConfigError."""
    if params["ttl_refresh"] and not params["ttl"]:
        raise click.UsageError("--ttl-refresh needs --ttl")
    if params["ttl"] and params["ttl_refresh"] >= params["ttl"]:
        raise click.UsageError("--ttl-refresh must be shorter than --ttl")
    consul = parse_registry_uri(params["registry_uri"], environ)
    for label, path in (
        ("CONSUL_CACERT", consul.ca_file),
        ("CONSUL_CLIENT_CERT", consul.cert_file),
        ("CONSUL_CLIENT_KEY", consul.key_file),
    ):
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"{label}: cannot read {path}")
    if consul.cert_file and not consul.key_file:
        raise ConfigError("CONSUL_CLIENT_CERT is set but CONSUL_CLIENT_KEY is not")
    return Settings(
        hostname=params["hostname"],
        ip=params["ip"],
        internal=params["internal"],
        explicit=params["explicit"],
        tags=tuple(t.strip() for t in params["tags"].split(",") if t.strip()),
        resync=params["resync"],
        cleanup=params["cleanup"],
        deregister=params["deregister"],
        retry_attempts=params["retry_attempts"],
        retry_interval_ms=params["retry_interval"],
        ttl=params["ttl"],
        ttl_refresh=params["ttl_refresh"],
        use_ip_from_label=params["use_ip_from_label"],
        allow_script_checks=params["allow_script_checks"],
        docker_host=params["docker_host"],
        consul=consul,
        log_format=params["log_format"],
        log_level=params["log_level"],
        metrics_addr=params.get("metrics_addr", ""),
    )


def _fail(code: ExitCode, message: str) -> NoReturn:
    click.echo(f"registrar: {message}", err=True)
    sys.exit(code)


def _connect(params: Mapping[str, Any], stop: threading.Event | None = None) -> Any:
    """Settings, Docker and Consul adapters, with the hostname resolved; exits on failure."""
    from registrar.consul_sink import ConsulSink
    from registrar.docker_source import DockerSource

    environ = dict(os.environ)
    try:
        settings = build_settings(params, environ)
    except ConfigError as e:
        _fail(ExitCode.CONFIG, str(e))
    logs.configure(settings.log_format, settings.log_level)
    try:
        source = DockerSource(settings, environ)
        if not settings.hostname:
            settings = dataclasses.replace(settings, hostname=source.host_name())
    except DockerError as e:
        _fail(ExitCode.DOCKER, str(e))
    sink = ConsulSink(settings.consul)
    try:
        wait_for_consul(sink, settings, stop or threading.Event())
    except ConsulError as e:
        _fail(ExitCode.CONSUL, str(e))
    return settings, source, sink


def wait_for_consul(sink: Any, settings: Settings, stop: threading.Event) -> None:
    """Read the agent's services until it answers, ``--retry-attempts`` times (-1: forever)."""
    attempt = 0
    while True:
        try:
            sink.services()
            return
        except ConsulError as e:
            attempt += 1
            if (settings.retry_attempts >= 0 and attempt > settings.retry_attempts) or stop.is_set():
                raise ConsulError(f"gave up after {attempt} attempt(s): {e}") from None
            log.warning("consul_unreachable", error=str(e), attempt=attempt)
            stop.wait(settings.retry_interval_ms / 1000)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="registrar")
def cli() -> None:
    """Keep the local Consul agent's services equal to the containers running on this Docker host."""


@cli.command()
@shared_options
@click.option(
    "--metrics-addr",
    envvar="REGISTRAR_METRICS_ADDR",
    default="127.0.0.1:9105",
    show_default=True,
    show_envvar=True,
    help="host:port for /metrics, /healthz and /readyz (empty: off).",
)
def run(**params: Any) -> None:
    """Run the daemon: reconcile at start, then follow Docker events until SIGTERM/SIGINT."""
    from registrar.daemon import Daemon

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    settings, source, sink = _connect(params, stop)
    if stop.is_set():
        sys.exit(ExitCode.OK)
    daemon = Daemon(source, sink, settings)
    for sig in previous:
        signal.signal(sig, lambda *_: daemon.stop())
    server = _serve_health(settings.metrics_addr, daemon)
    log.info(
        "registrar_started",
        version=__version__,
        hostname=settings.hostname,
        consul=settings.consul.describe(),
        docker=source.where,
    )
    try:
        daemon.run()
    finally:
        if server is not None:
            server.stop()
    sys.exit(ExitCode.OK)


def _serve_health(addr: str, daemon: Any) -> Any:
    """Start the metrics/health server; a taken port is logged, and registrar runs on without it."""
    from registrar.metrics import HealthServer

    if not addr:
        return None
    try:
        server = HealthServer(addr, daemon.metrics, daemon.live, daemon.not_ready)
    except (OSError, ValueError) as e:
        log.error("metrics_unavailable", address=addr, error=str(e))
        return None
    server.start()
    return server


@cli.command()
@shared_options
def sync(**params: Any) -> None:
    """Reconcile once and exit: 0 when Consul is in sync, non-zero when it could not be made so."""
    from registrar.reconciler import Reconciler

    settings, source, sink = _connect(params)
    reconciler = Reconciler(source, sink, settings)
    try:
        reconciler.refresh_all()
        outcome = reconciler.converge(read=True)
    except DockerError as e:
        _fail(ExitCode.DOCKER, str(e))
    except ConsulError as e:
        _fail(ExitCode.CONSUL, str(e))
    finally:
        reconciler.close()
    click.echo(
        f"registered {outcome.registered}, deregistered {outcome.deregistered}, "
        f"failed {outcome.failed}, rejected by Consul {outcome.rejected}"
    )
    sys.exit(ExitCode.NOT_IN_SYNC if outcome.failed or outcome.rejected else ExitCode.OK)


@cli.command(name="plan")
@shared_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_command(as_json: bool, **params: Any) -> None:
    """Print what sync would change (one line per service ID); change nothing."""
    from registrar.reconciler import Reconciler

    settings, source, sink = _connect(params)
    reconciler = Reconciler(source, sink, settings)
    try:
        reconciler.refresh_all()
        actions = reconciler.plan()
    except DockerError as e:
        _fail(ExitCode.DOCKER, str(e))
    except ConsulError as e:
        _fail(ExitCode.CONSUL, str(e))
    finally:
        reconciler.close()
    if as_json:
        rows: list[dict[str, Any]] = []
        for action in actions:
            if isinstance(action, Register):
                rows.append({"action": "register", "id": action.service_id, "service": action.service.to_consul()})
            else:
                rows.append({"action": "deregister", "id": action.service_id})
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for action in actions:
        if isinstance(action, Register):
            s = action.service
            click.echo(f"register    {s.id}  name={s.name} address={s.address or '(agent)'} port={s.port}")
        elif isinstance(action, Deregister):
            click.echo(f"deregister  {action.service_id}")
    if not actions:
        click.echo("in sync: nothing to change")


def main(argv: list[str] | None = None) -> None:
    """Console entry point; a command line without a command means ``run`` (registrator style)."""
    args = list(sys.argv[1:] if argv is None else argv)
    first = args[0] if args else ""
    if first not in COMMANDS and first not in ("-h", "--help", "--version"):
        args.insert(0, "run")
    try:
        cli.main(args=args, prog_name="registrar")
    except RegistrarError as e:
        _fail(ExitCode.CONFIG, str(e))
