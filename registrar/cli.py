"""The command line: a thin click layer over a frozen Settings.

``registrar run|sync|plan [OPTIONS] [REGISTRY_URI]``, ``registrar explain [OPTIONS] CONTAINER [REGISTRY_URI]``.
Every option also comes from ``REGISTRAR_<OPTION>``; a flag beats the environment. registrator's single-dash spellings
(``-ip``, ``-internal``, ``-useIpFromLabel`` ...) are accepted too, and a command line with no
command runs the daemon, so registrar can stand in for registrator as it is invoked today.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
import structlog

from registrar import __version__, logs
from registrar.container import FILTER_KINDS
from registrar.errors import ConfigError, ConsulError, DockerError, RegistrarError
from registrar.host_address import BadAddress, parse_spec, resolve
from registrar.lifecycle import ExitCode, Shutdown, capture_signals, retry_at_start
from registrar.metadata import parse_bool, split_tags
from registrar.model import OWNERSHIP_KEYS, Deregister, Register
from registrar.service_meta import MAX_META_KEYS, MAX_META_VALUE, META_KEY
from registrar.settings import DEREGISTER_MODES, Settings, parse_node_ttl, parse_registry_uri

if TYPE_CHECKING:
    from registrar.adapters import ServiceSink
    from registrar.daemon import Daemon
    from registrar.metrics import HealthServer

log = structlog.get_logger("registrar")
COMMANDS = ("run", "sync", "plan", "explain")
CONTAINER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
"""What Docker accepts as a container's name or ID (prefix); anything else names no container."""
T = TypeVar("T")


def _opt(name: str, *aliases: str, **kwargs: Any) -> click.Option:
    env = "REGISTRAR_" + name.upper().replace("-", "_")
    return click.Option([f"--{name}", *aliases], envvar=env, show_default=True, show_envvar=True, **kwargs)


SHARED_PARAMS: list[click.Parameter] = [
    _opt("hostname", default="", help="Host identity in service IDs and ownership Meta [default: docker info Name]"),
    _opt(
        "ip",
        "-ip",
        default="",
        help="Address to register for published ports: an IP, an interface (eth1: its address) or a range "
        "(10.20.0.0/16: the host's address in it).",
    ),
    _opt("wan-ip", default="", help="Address of Consul's wan tagged addresses: an IP, an interface or a range."),
    _opt("internal", "-internal", is_flag=True, help="Register container addresses and exposed ports."),
    _opt("explicit", "-explicit", is_flag=True, help="Only containers/ports with SERVICE_NAME or SERVICE_<port>_NAME."),
    _opt(
        "tags",
        "-tags",
        default="",
        help="Comma-separated tags added to every service; a Go template (with {{ }}) is rendered for each "
        "container, as registrator's.",
    ),
    _opt("tags-http", is_flag=True, help="Let tag templates' httpGet fetch URLs (off: httpGet is an error)."),
    _opt("resync", "-resync", type=click.IntRange(min=0), default=0, help="Seconds between full reconciles (0: off)."),
    _opt(
        "cleanup", "-cleanup", is_flag=True, help="Accepted for compatibility: stale registrations are always removed."
    ),
    _opt(
        "deregister",
        "-deregister",
        type=click.Choice(DEREGISTER_MODES),
        default="always",
        help="On container exit: always deregister, or only when it did not crash (exit 0, or a signal's 128+N).",
    ),
    _opt(
        "retry-attempts",
        "-retry-attempts",
        type=click.IntRange(min=-1),
        default=10,
        help="Retries after the first try to reach Docker, then Consul, at start (-1: forever).",
    ),
    _opt(
        "retry-interval",
        "-retry-interval",
        type=click.IntRange(min=1),
        default=1000,
        help="Milliseconds between attempts to reach Docker and Consul at start.",
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
    click.Option(
        ["--drain-on-stop/--no-drain-on-stop"],
        envvar="REGISTRAR_DRAIN_ON_STOP",
        default=True,
        show_default=True,
        show_envvar=True,
        help="On docker stop, take the container's services out of the passing set at once (maintenance).",
    ),
    _opt("ipv6", is_flag=True, help="Primary address IPv6 where one is known (tagged addresses carry both)."),
    _opt("network", default="", help="Network whose address --internal registers (SERVICE_NETWORK beats it)."),
    _opt(
        "docker-health",
        type=click.Choice(["on", "off"]),
        default="on",
        help="Mirror Docker HEALTHCHECK status in a Consul check (label SERVICE_CHECK_DOCKER_HEALTH=false: off).",
    ),
    _opt(
        "exec-checks",
        type=click.Choice(["on", "off"]),
        default="on",
        help="Run SERVICE_CHECK_EXEC commands in containers (Docker's exec API) for their TTL checks.",
    ),
    _opt("allow-script-checks", is_flag=True, help="Allow SERVICE_CHECK_SCRIPT (commands run by the Consul agent)."),
    _opt("docker-host", default="", help="Docker endpoint [default: DOCKER_HOST, else the local socket]"),
    _opt(
        "filter",
        multiple=True,
        metavar="KIND=VALUE",
        help="Only containers that match (docker ps --filter's words: label=KEY, label=KEY=VALUE, name=REGEX, "
        "network=NAME); repeatable, all must match.",
    ),
    _opt(
        "instance",
        default="",
        metavar="NAME",
        help="Instance name: registrars of other instances on this host and agent never touch these registrations.",
    ),
    _opt("meta", multiple=True, metavar="KEY=VALUE", help="Meta added to every service (SERVICE_<KEY> beats it)."),
    _opt(
        "log-format",
        type=click.Choice(["auto", "console", "json"]),
        default="auto",
        help="Log format; auto is console on a terminal, JSON otherwise.",
    ),
    _opt("log-level", type=click.Choice(logs.LEVELS), default="info", help="Lowest level logged."),
    _opt(
        "catalog",
        is_flag=False,
        flag_value="true",
        default=None,
        metavar="[URI]",
        help="No Consul agent on this host: write into the catalog at URI (any agent or server; bare: "
        "REGISTRY_URI's), this host an external node named --hostname at --ip.",
    ),
    click.Argument(["registry_uri"], required=False, envvar="REGISTRAR_REGISTRY_URI"),
]
"""The options and the argument every command takes: built once, and each command lists these same
objects (``params=[*SHARED_PARAMS]``; click appends the command's decorated ones after them). Built
for each of the four commands, they held 0.15 MiB more for as long as registrar runs."""


def build_settings(params: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Settings from the parsed options and the environment; raises ConfigError."""
    if params["ttl_refresh"] and not params["ttl"]:
        raise click.UsageError("--ttl-refresh needs --ttl")
    if params["ttl"] and params["ttl_refresh"] >= params["ttl"]:
        raise click.UsageError("--ttl-refresh must be shorter than --ttl")
    ip, ip_from = _host_address("--ip", params["ip"], params["ipv6"])
    wan_ip, wan_ip_from = _host_address("--wan-ip", params.get("wan_ip", ""), params["ipv6"])
    instance = params.get("instance", "").strip()
    if instance and not INSTANCE_NAME.match(instance):
        raise click.UsageError(f"--instance {instance!r}: use letters, digits, '.', '_' and '-' (at most 64)")
    # "" names the registrar that ran without --instance (a host that adopts one).
    forget_instances = tuple(dict.fromkeys(n.strip() for n in params.get("forget_instance", ())))
    if instance in forget_instances:
        raise click.UsageError(f"--forget-instance {instance}: that is this registrar's own instance")
    tags_template = _tags_template(params["tags"], params.get("tags_http", False))
    catalog_uri, catalog = _catalog(params.get("catalog"), params["registry_uri"])
    try:
        node_ttl = parse_node_ttl(params.get("node_ttl") or "30s")
    except ValueError as e:
        raise click.UsageError(f"--node-ttl {params.get('node_ttl')!r}: {e}") from None
    if catalog:
        _catalog_needs(params, ip)
    consul = parse_registry_uri(catalog_uri or params["registry_uri"], environ)
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
        ip=ip,
        internal=params["internal"],
        explicit=params["explicit"],
        tags=() if tags_template else tuple(split_tags(params["tags"])),
        tags_template=tags_template,
        tags_http=params.get("tags_http", False),
        resync=params["resync"],
        cleanup=params["cleanup"],
        deregister=params["deregister"],
        retry_attempts=params["retry_attempts"],
        retry_interval_ms=params["retry_interval"],
        ttl=params["ttl"],
        ttl_refresh=params["ttl_refresh"],
        use_ip_from_label=params["use_ip_from_label"],
        allow_script_checks=params["allow_script_checks"],
        docker_health=params["docker_health"] == "on",
        exec_checks=params["exec_checks"] == "on",
        ipv6=params["ipv6"],
        drain_on_stop=params["drain_on_stop"],
        network=params["network"],
        docker_host=params["docker_host"],
        consul=consul,
        log_format=params["log_format"],
        log_level=params["log_level"],
        metrics_addr=params.get("metrics_addr", ""),
        forget_hosts=tuple(dict.fromkeys(n for n in params.get("forget_host", ()) if n)),
        ip_from=ip_from,
        wan_ip=wan_ip,
        wan_ip_from=wan_ip_from,
        instance=instance,
        forget_instances=forget_instances,
        filters=tuple(_filter(text) for text in params.get("filter", ())),
        meta=_meta(params.get("meta", ())),
        catalog=catalog,
        node_ttl=node_ttl,
    )


INSTANCE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _catalog(value: str | None, registry_uri: str | None) -> tuple[str, bool]:
    """``--catalog [URI]``: (the Consul URI it names, "" for REGISTRY_URI's; whether catalog mode is on). Bare,
    or a true word (``REGISTRAR_CATALOG=true``): on, at REGISTRY_URI's endpoint; a false word: off."""
    text = (value or "").strip()
    on = parse_bool(text) if text else False
    if on is not None:
        return "", on
    if "://" not in text:
        raise click.UsageError(
            f"--catalog {text!r} is not a Consul URI (consul://HOST:PORT, consul-tls://HOST:PORT, "
            "consul-unix:///path); a bare --catalog goes last, or write --catalog=true"
        )
    if registry_uri and registry_uri != text:
        raise click.UsageError(f"--catalog {text} and REGISTRY_URI {registry_uri} name two Consul endpoints: give one")
    return text, True


def _catalog_needs(params: Mapping[str, Any], ip: str) -> None:
    """What ``--catalog`` needs and refuses, as usage errors."""
    if not ip:
        raise click.UsageError(
            "--catalog needs --ip: the address of this host's catalog node (no agent on this host gives one)"
        )
    if params["allow_script_checks"]:
        raise click.UsageError("--allow-script-checks: a Consul agent runs script checks, and --catalog has none")
    if params.get("forget_host"):
        raise click.UsageError(
            "--forget-host with --catalog: a renamed host's services are on its own catalog node (not yet supported)"
        )


def _host_address(flag: str, text: str, ipv6: bool) -> tuple[str, str]:
    """``--ip``/``--wan-ip``: (the address now, the value as given when it names an interface or a range).

    Not an address, an interface name or a range: a usage error; an interface or range that gives no
    address now: a configuration error (exit 3)."""
    if not text.strip():
        return "", ""
    try:
        spec = parse_spec(text)
    except BadAddress as e:
        raise click.UsageError(f"{flag}: {e}") from None
    try:
        address = resolve(spec, ipv6)
    except BadAddress as e:
        raise ConfigError(f"{flag} {e}") from None
    return address, spec.text if spec.dynamic else ""


def _tags_template(text: str, http: bool) -> str:
    """``--tags`` when it is a Go template (holds ``{{``), parsed once here: one that does not parse is a
    usage error; "" for a plain tag list (the template engine is not even imported then)."""
    if "{{" not in text:
        return ""
    from registrar.tag_template import TemplateError, template

    try:
        template(text, http)
    except TemplateError as e:
        raise click.UsageError(f"--tags: not a valid template: {e}") from None
    return text


def _filter(text: str) -> tuple[str, str]:
    """One ``--filter KIND=VALUE``; raises a usage error naming it."""
    kind, _, value = text.partition("=")
    kind = kind.strip().lower()
    if kind not in FILTER_KINDS or not value or (kind == "label" and not value.partition("=")[0]):
        raise click.UsageError(f"--filter {text!r}: use label=KEY, label=KEY=VALUE, name=REGEX or network=NAME")
    if kind == "name":
        try:
            re.compile(value)
        except re.error as e:
            raise click.UsageError(f"--filter {text!r}: not a regular expression ({e})") from None
    return kind, value


def _meta(pairs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``--meta KEY=VALUE`` pairs; a key or value Consul would refuse is a configuration error (exit 3)."""
    out: dict[str, str] = {}
    for text in pairs:
        key, sep, value = text.partition("=")
        key = key.lower()  # as SERVICE_<KEY> becomes Meta, so that the container's own key beats it
        if not sep or not META_KEY.match(key) or key.startswith("consul-"):
            raise ConfigError(f"--meta {text!r}: use KEY=VALUE, the key of letters, digits, _ and - (not consul-*)")
        if key in OWNERSHIP_KEYS:
            raise ConfigError(f"--meta {text!r}: {key} is registrar's own (ownership Meta)")
        if len(value.encode()) > MAX_META_VALUE:
            raise ConfigError(f"--meta {key}: the value is longer than Consul's {MAX_META_VALUE} bytes")
        out[key] = value
    if len(out) > MAX_META_KEYS - len(OWNERSHIP_KEYS):
        raise ConfigError(f"--meta: {len(out)} keys; Consul takes {MAX_META_KEYS} in all, registrar's own included")
    return tuple(out.items())


def _fail(code: ExitCode, message: str) -> NoReturn:
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
        _fail(ExitCode.CONFIG, str(e))
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
            _fail(ExitCode.USAGE, f"--forget-host {hostname}: that is this host itself")
        settings = dataclasses.replace(settings, hostname=hostname)
        if settings.catalog:  # this host an external node of the catalog: no agent here
            from registrar.catalog_sink import CatalogSink, catalog_node

            catalog = CatalogSink(settings.consul, catalog_node(hostname, settings.ip, settings.instance))
            sink: ServiceSink = catalog
        else:
            sink = ConsulSink(settings.consul)
        if retry_at_start("consul", sink.services, ConsulError, attempts, interval, shutdown) is None:
            return None
        if settings.catalog and keep_node:
            hold = functools.partial(catalog.hold_node, settings.node_ttl)
            if retry_at_start("consul", hold, ConsulError, attempts, interval, shutdown) is None:
                return None
    except ConfigError as e:
        _fail(ExitCode.CONFIG, str(e))
    except DockerError as e:
        _fail(ExitCode.DOCKER, str(e))
    except ConsulError as e:
        _fail(ExitCode.CONSUL, str(e))
    return settings, source, sink


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="registrar")
def cli() -> None:
    """Keep the local Consul agent's services equal to the containers running on this Docker host."""


@cli.command(params=[*SHARED_PARAMS])
@click.option(
    "--metrics-addr",
    envvar="REGISTRAR_METRICS_ADDR",
    default="127.0.0.1:9105",
    show_default=True,
    show_envvar=True,
    help="host:port for /metrics, /healthz and /readyz (empty: off).",
)
@click.option(
    "--node-ttl",
    envvar="REGISTRAR_NODE_TTL",
    default="30s",
    show_default=True,
    show_envvar=True,
    help="With --catalog: TTL of the Consul session that keeps this host's node (a Go duration, 10s to 24h); "
    "the registrars that live remove a node whose registrar is gone, about 3 TTLs after.",
)
def run(**params: Any) -> None:
    """Run the daemon: reconcile at start, then follow Docker events until SIGTERM/SIGINT."""
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


def _forget(what: str, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--forget-host`` / ``--forget-instance``: repeatable, also from REGISTRAR_FORGET_<WHAT>."""
    return click.option(
        f"--forget-{what}",
        multiple=True,
        envvar=f"REGISTRAR_FORGET_{what.upper()}",
        show_envvar=True,
        metavar="NAME",
        help=help,
    )


FORGET_HOST = _forget("host", "Also remove every registration registrar made for host NAME (a renamed host).")
FORGET_INSTANCE = _forget(
    "instance",
    "Also remove every registration this host's registrar made as --instance NAME (a renamed instance; "
    "'' for the one without --instance).",
)


def _connected(params: Mapping[str, Any], work: Callable[[Settings, Any, Any], T]) -> T:
    """Connect, and run ``work(settings, source, sink)``; exits on Docker or Consul errors."""
    connected = _connect(params, Shutdown())
    assert connected is not None, "nothing requests a shutdown of a one-shot command"
    settings, source, sink = connected
    try:
        return work(settings, source, sink)
    except DockerError as e:
        _fail(ExitCode.DOCKER, str(e))
    except ConsulError as e:
        _fail(ExitCode.CONSUL, str(e))
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


@cli.command(params=[*SHARED_PARAMS])
@FORGET_HOST
@FORGET_INSTANCE
def sync(**params: Any) -> None:
    """Reconcile once and exit: 0 when Consul is in sync, non-zero when it could not be made so."""
    outcome = _one_shot(params, lambda daemon: daemon.sync())
    click.echo(
        f"registered {outcome.registered}, deregistered {outcome.deregistered}, "
        f"failed {outcome.failed}, rejected by Consul {outcome.rejected}"
    )
    sys.exit(ExitCode.NOT_IN_SYNC if outcome.failed or outcome.rejected else ExitCode.OK)


@cli.command(name="plan", params=[*SHARED_PARAMS])
@FORGET_HOST
@FORGET_INSTANCE
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_command(as_json: bool, **params: Any) -> None:
    """Print what sync would change (one line per service ID); change nothing."""
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


@cli.command(name="explain", params=[click.Argument(["container"]), *SHARED_PARAMS])
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as one JSON object.")
def explain_command(container: str, as_json: bool, **params: Any) -> None:
    """Explain one container (name or ID): its ports, SERVICE_* keys, problems, services, and the agent's state.

    Exit 0 when explained (even when it yields nothing), 1 when there is no such container.
    """
    from registrar.addresses import network_owner
    from registrar.explain import explain, render

    wanted = container.strip().removeprefix("/")  # docker ps shows no slash, docker inspect's Name has one
    if not wanted:
        raise click.UsageError("CONTAINER is empty: give a container's name or ID")

    def look(settings: Settings, source: Any, sink: Any) -> Any:
        found = source.inspect(wanted) if CONTAINER_NAME.match(wanted) else None
        if found is None:
            _fail(ExitCode.NOT_FOUND, f"no such container: {container}")
        owner_ref = network_owner(found) if settings.internal else ""
        return explain(found, settings, sink.services(), source.inspect(owner_ref) if owner_ref else None)

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


def command_first(args: list[str]) -> list[str]:
    """The command line with its command first: options given before the command move after it
    (``--log-level debug sync URI`` is ``sync --log-level debug URI``), and a line without a command
    runs the daemon (``-ip 10.0.0.1 consul://...``, as registrator is invoked). An option's value is
    never taken for the command (``--hostname plan`` names a host)."""
    if args and args[0] in ("-h", "--help", "--version"):
        return args
    takes_value = {
        name
        for command in cli.commands.values()
        for param in command.params
        if isinstance(param, click.Option) and not param.is_flag
        for name in param.opts
    }
    at = 0
    while at < len(args):
        word = args[at]
        if word == "--" or not word.startswith("-"):
            break
        at += 2 if word in takes_value else 1  # ``--ip=X`` is one word
    if at < len(args) and args[at] in COMMANDS:
        return [args[at], *args[:at], *args[at + 1 :]]
    return ["run", *args]


def main(argv: list[str] | None = None) -> None:
    """Console entry point; a command line without a command means ``run`` (registrator style)."""
    args = command_first(list(sys.argv[1:] if argv is None else argv))
    try:
        code = cli.main(args=args, prog_name="registrar", standalone_mode=False)
    except click.UsageError as e:  # a bad option or value: one line, not click's usage block
        _fail(ExitCode.USAGE, e.format_message())
    except click.ClickException as e:
        _fail(ExitCode.CONFIG, e.format_message())
    except click.exceptions.Abort:  # click's name for Ctrl-C outside ``run`` (which handles signals)
        click.echo("registrar: interrupted", err=True)
        sys.exit(128 + signal.SIGINT)
    except RegistrarError as e:
        _fail(ExitCode.CONFIG, str(e))
    except Exception:
        # A bug: one structured event with the traceback (dict tracebacks in JSON), then a named exit.
        log.critical("registrar_crashed", exc_info=True)
        sys.exit(ExitCode.INTERNAL)
    sys.exit(code if isinstance(code, int) else ExitCode.OK)  # --help and --version: 0
