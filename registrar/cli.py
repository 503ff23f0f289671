"""The command line: click's commands and their options, over registrar.options (options to a frozen Settings)
and registrar.commands (what each command does).

``registrar run|sync|plan [OPTIONS] [REGISTRY_URI]``, ``registrar explain [OPTIONS] CONTAINER [REGISTRY_URI]``.
Every option also comes from ``REGISTRAR_<OPTION>``; a flag beats the environment. registrator's single-dash spellings
(``-ip``, ``-internal``, ``-useIpFromLabel`` ...) are accepted too, and a command line with no
command runs the daemon, so registrar can stand in for registrator as it is invoked today.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any

import click
import structlog

from registrar import __version__, commands, logs
from registrar.errors import RegistrarError
from registrar.lifecycle import ExitCode
from registrar.settings import DEREGISTER_MODES

log = structlog.get_logger("registrar")
COMMANDS = ("run", "sync", "plan", "explain")


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
    _opt(
        "catalog-checks",
        type=click.Choice(["registrar", "esm"]),
        default="registrar",
        help="With --catalog: who runs HTTP, TCP and gRPC checks, registrar from this host or consul-esm (from each "
        "check's Definition).",
    ),
    click.Argument(["registry_uri"], required=False, envvar="REGISTRAR_REGISTRY_URI"),
]
"""The options and the argument every command takes: built once, and each command lists these same
objects (``params=[*SHARED_PARAMS]``; click appends the command's decorated ones after them). Built
for each of the four commands, they held 0.15 MiB more for as long as registrar runs."""


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
    commands.run(params)


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


@cli.command(params=[*SHARED_PARAMS])
@FORGET_HOST
@FORGET_INSTANCE
def sync(**params: Any) -> None:
    """Reconcile once and exit: 0 when Consul is in sync, non-zero when it could not be made so."""
    commands.sync(params)


@cli.command(name="plan", params=[*SHARED_PARAMS])
@FORGET_HOST
@FORGET_INSTANCE
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_command(as_json: bool, **params: Any) -> None:
    """Print what sync would change (one line per service ID); change nothing."""
    commands.plan(params, as_json)


@cli.command(name="explain", params=[click.Argument(["container"]), *SHARED_PARAMS])
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as one JSON object.")
def explain_command(container: str, as_json: bool, **params: Any) -> None:
    """Explain one container (name or ID): its ports, SERVICE_* keys, problems, services, and the agent's state.

    Exit 0 when explained (even when it yields nothing), 1 when there is no such container.
    """
    commands.explain(container, as_json, params)


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
        commands.fail(ExitCode.USAGE, e.format_message())
    except click.ClickException as e:
        commands.fail(ExitCode.CONFIG, e.format_message())
    except click.exceptions.Abort:  # click's name for Ctrl-C outside ``run`` (which handles signals)
        click.echo("registrar: interrupted", err=True)
        sys.exit(128 + signal.SIGINT)
    except RegistrarError as e:
        commands.fail(ExitCode.CONFIG, str(e))
    except Exception:
        # A bug: one structured event with the traceback (dict tracebacks in JSON), then a named exit.
        log.critical("registrar_crashed", exc_info=True)
        sys.exit(ExitCode.INTERNAL)
    sys.exit(code if isinstance(code, int) else ExitCode.OK)  # --help and --version: 0
