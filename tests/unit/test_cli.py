"""The command line: flags and REGISTRAR_* variables into Settings; bad configuration."""

from __future__ import annotations

import dataclasses
import json
import signal
from typing import Any

import click
import pytest
from click.testing import CliRunner

from registrar import __version__
from registrar.cli import cli, main, run, sync
from registrar.options import build_settings
from registrar.settings import ConsulTarget, Settings
from tests.unit.fakes import MemoryConsul, MemoryDocker
from tests.unit.payloads import payload


def settings_for(args: list[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str] | None = None) -> Settings:
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    forget = any(a.startswith("--forget-") for a in args) or any(k.startswith("REGISTRAR_FORGET_") for k in env or {})
    command = sync if forget else run
    ctx = command.make_context(command.name or "run", args)
    return build_settings({"metrics_addr": "", **ctx.params}, env or {})


OPTION_TABLE: list[tuple[list[str], dict[str, str], str, Any]] = [
    (["--hostname", "h1"], {}, "hostname", "h1"),
    ([], {"REGISTRAR_HOSTNAME": "h2"}, "hostname", "h2"),
    (["--ip", "10.0.0.9"], {}, "ip", "10.0.0.9"),
    (["-ip", "10.0.0.8"], {}, "ip", "10.0.0.8"),
    (["--internal"], {}, "internal", True),
    (["-internal"], {}, "internal", True),
    ([], {"REGISTRAR_INTERNAL": "true"}, "internal", True),
    (["--explicit"], {}, "explicit", True),
    (["--tags", "a, b"], {}, "tags", ("a", "b")),
    ([], {"REGISTRAR_TAGS": "x,y"}, "tags", ("x", "y")),
    (["--tags", "a\\,b,c"], {}, "tags", ("a,b", "c")),
    (["-tags", "a,{{ .Name }}"], {}, "tags_template", "a,{{ .Name }}"),
    (["-tags", "a,{{ .Name }}"], {}, "tags", ()),
    (["--tags-http"], {}, "tags_http", True),
    ([], {"REGISTRAR_TAGS_HTTP": "true"}, "tags_http", True),
    (["--resync", "30"], {}, "resync", 30),
    ([], {"REGISTRAR_RESYNC": "30"}, "resync", 30),
    (["--resync", "5"], {"REGISTRAR_RESYNC": "30"}, "resync", 5),
    (["--cleanup"], {}, "cleanup", True),
    (["--deregister", "on-success"], {}, "deregister", "on-success"),
    ([], {"REGISTRAR_DEREGISTER": "on-success"}, "deregister", "on-success"),
    (["--retry-attempts", "-1"], {}, "retry_attempts", -1),
    (["--retry-interval", "250"], {}, "retry_interval_ms", 250),
    (["--ttl", "30", "--ttl-refresh", "10"], {}, "ttl_refresh", 10),
    (["-useIpFromLabel", "ip.label"], {}, "use_ip_from_label", "ip.label"),
    (["--use-ip-from-label", "ip.label"], {}, "use_ip_from_label", "ip.label"),
    (["--allow-script-checks"], {}, "allow_script_checks", True),
    (["--docker-host", "tcp://127.0.0.1:2375"], {}, "docker_host", "tcp://127.0.0.1:2375"),
    ([], {"REGISTRAR_DOCKER_HOST": "unix:///x.sock"}, "docker_host", "unix:///x.sock"),
    (["--log-format", "json"], {}, "log_format", "json"),
    (["--log-level", "debug"], {}, "log_level", "debug"),
    (["--metrics-addr", "127.0.0.1:9105"], {}, "metrics_addr", "127.0.0.1:9105"),
    (["--forget-host", "old", "--forget-host", "older"], {}, "forget_hosts", ("old", "older")),
    ([], {"REGISTRAR_FORGET_HOST": "old"}, "forget_hosts", ("old",)),
    (["consul://10.1.2.3:8500"], {}, "consul", ConsulTarget(host="10.1.2.3")),
    (["--ttl", "30"], {}, "ttl", 30),
    (["--docker-health", "off"], {}, "docker_health", False),
    (["--ipv6"], {}, "ipv6", True),
    (["--no-drain-on-stop"], {}, "drain_on_stop", False),
    ([], {"REGISTRAR_DRAIN_ON_STOP": "false"}, "drain_on_stop", False),
    (["--network", "backend"], {}, "network", "backend"),
    ([], {"REGISTRAR_NETWORK": "backend"}, "network", "backend"),
    ([], {"REGISTRAR_DOCKER_HEALTH": "off"}, "docker_health", False),
    (["--exec-checks", "off"], {}, "exec_checks", False),
    (["--ip", "lo"], {}, "ip", "127.0.0.1"),
    (["--ip", "lo"], {}, "ip_from", "lo"),
    (["--ip", "127.0.0.0/8"], {}, "ip", "127.0.0.1"),
    (["--ip", "10.42.7.9/16"], {}, "ip", "10.42.7.9"),
    (["--ip", "10.42.7.9/16"], {}, "ip_from", ""),
    (["--wan-ip", "203.0.113.7"], {}, "wan_ip", "203.0.113.7"),
    ([], {"REGISTRAR_WAN_IP": "lo"}, "wan_ip_from", "lo"),
    (["--instance", "team-a"], {}, "instance", "team-a"),
    ([], {"REGISTRAR_INSTANCE": "dc2"}, "instance", "dc2"),
    (["--forget-instance", "old"], {}, "forget_instances", ("old",)),
    (["--filter", "label=shop", "--filter", "name=^web-"], {}, "filters", (("label", "shop"), ("name", "^web-"))),
    ([], {"REGISTRAR_FILTER": "network=backend"}, "filters", (("network", "backend"),)),
    (["--meta", "env=prod", "--meta", "Team=a=b"], {}, "meta", (("env", "prod"), ("team", "a=b"))),
    (["--instance", "a", "--forget-instance", ""], {}, "forget_instances", ("",)),
    (["--catalog", "--ip", "10.0.0.9"], {}, "catalog", True),
    (["--ip", "10.0.0.9"], {"REGISTRAR_CATALOG": "consul://10.1.2.3:8500"}, "catalog", True),
    (["--node-ttl", "15s"], {}, "node_ttl", 15),
    ([], {"REGISTRAR_NODE_TTL": "1m"}, "node_ttl", 60),
    (["--catalog", "--ip", "10.0.0.9", "--catalog-checks", "esm"], {}, "catalog_checks", "esm"),
    (["--catalog", "--ip", "10.0.0.9"], {"REGISTRAR_CATALOG_CHECKS": "esm"}, "catalog_checks", "esm"),
]


@pytest.mark.parametrize(("args", "env", "field", "value"), OPTION_TABLE)
def test_option_table(
    args: list[str], env: dict[str, str], field: str, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every option comes from its flag or REGISTRAR_<OPTION>; the flag beats the environment."""
    assert getattr(settings_for(args, monkeypatch, env), field) == value


def test_every_setting_has_an_option() -> None:
    """No dead configuration: every Settings field is set by some row of the option table."""
    assert {f.name for f in dataclasses.fields(Settings)} == {row[2] for row in OPTION_TABLE}


def test_registry_uri_argument_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """REGISTRY_URI comes from the argument or REGISTRAR_REGISTRY_URI."""
    assert settings_for(["consul://10.9.9.9:8500"], monkeypatch).consul.host == "10.9.9.9"
    assert settings_for([], monkeypatch, {"REGISTRAR_REGISTRY_URI": "consul://e:1"}).consul.host == "e"


def test_ttl_refresh_must_be_shorter(monkeypatch: pytest.MonkeyPatch) -> None:
    """--ttl-refresh at or above --ttl is a usage error."""
    with pytest.raises(click.UsageError):
        settings_for(["--ttl", "10", "--ttl-refresh", "10"], monkeypatch)


def test_version() -> None:
    """--version prints the version and exits 0."""
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["sync", "etcd://x:1"], 3, "unknown registry URI scheme 'etcd'"),
        (["plan", "consul://x:port"], 3, "invalid port"),
        (["sync", "--deregister", "sometimes"], 2, "'sometimes' is not one of"),
        (["run", "--resync", "-3"], 2, "--resync"),
        (["sync", "--ttl-refresh", "3"], 2, "--ttl-refresh needs --ttl"),
        (["sync", "--ip", "my-host.example"], 3, "--ip my-host.example: no interface of that name on this host"),
        (["sync", "--ip", "a b"], 2, "--ip: 'a b' is not an IP address, an interface name or a range"),
        (["run", "--ip", "10.254.0.0/16"], 3, "--ip 10.254.0.0/16: no address of this host is in that range"),
        (["sync", "--wan-ip", "nosuch0"], 3, "--wan-ip nosuch0: no interface of that name"),
        (["sync", "--filter", "color=red"], 2, "--filter 'color=red': use label=KEY"),
        (["sync", "--filter", "name=(web"], 2, "not a regular expression"),
        (["sync", "--meta", "bad key=1"], 3, "--meta 'bad key=1': use KEY=VALUE"),
        (["sync", "--meta", "registrar-host=x"], 3, "--meta 'registrar-host=x': registrar-host is registrar's own"),
        (["sync", "--forget-instance", ""], 2, "that is this registrar's own instance"),
        (["run", "--instance", "a:b"], 2, "--instance 'a:b'"),
        (["sync", "--instance", "a", "--forget-instance", "a"], 2, "that is this registrar's own instance"),
        (["sync", "--tags", "{{ .Name "], 2, "--tags: not a valid template: unclosed action"),
        (["run", "-tags", "{{ nosuch .ID }}"], 2, "--tags: not a valid template: function 'nosuch' not defined"),
    ],
)
def test_bad_configuration_one_line(
    args: list[str], code: int, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad configuration: one line on stderr naming the problem, a non-zero exit, no traceback (the
    console entry point, as a user runs it: click's usage block would be four lines)."""
    with pytest.raises(SystemExit) as exit:
        main(args)
    out, err = capsys.readouterr()
    assert exit.value.code == code, err
    assert err.startswith("registrar: ") and needle in err and len(err.strip().splitlines()) == 1, err
    assert out == ""


def test_unreadable_tls_file(tmp_path: Any) -> None:
    """A CONSUL_CACERT that cannot be read is one line and exit 3."""
    result = CliRunner().invoke(cli, ["sync"], env={"CONSUL_CACERT": str(tmp_path / "missing.pem")})
    assert result.exit_code == 3
    assert result.output.strip() == f"registrar: CONSUL_CACERT: cannot read {tmp_path / 'missing.pem'}"


def test_no_command_means_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """registrator-style invocation without a command runs the daemon (here: fails on a bad URI, as run)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["-internal", "zk://x:1"])
    assert exit_info.value.code == 3


def test_options_before_the_command_belong_to_it(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """``registrar --log-level error --retry-attempts 0 sync --docker-host X`` runs sync with those options (here:
    Docker unreachable, exit 4), as a click user expects, instead of "Got unexpected extra argument"."""
    args = ["--log-level", "error", "--retry-attempts", "0", "sync", "--docker-host", f"unix://{tmp_path}/none.sock"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 4, capsys.readouterr().err
    assert "cannot reach the Docker engine" in capsys.readouterr().err


def test_an_option_value_that_names_a_command_is_a_value(capsys: pytest.CaptureFixture[str]) -> None:
    """``registrar --hostname plan zk://x:1`` runs the daemon for host "plan" (and fails on the URI), not ``plan``."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--hostname", "plan", "-tags", "sync", "zk://x:1"])
    assert exit_info.value.code == 3
    assert "unknown registry URI scheme 'zk'" in capsys.readouterr().err


def test_run_leaves_signal_handlers_as_it_found_them() -> None:
    """registrar run that exits (here on bad configuration) restores the SIGINT/SIGTERM handlers it replaced."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit):
        main(["run", "zk://x:1"])
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_docker_unreachable_at_start_is_retried_then_one_line(tmp_path: Any) -> None:
    """No Docker engine at start: retried --retry-attempts times, then one line and exit 4."""
    sock = tmp_path / "no-docker.sock"
    args = ["sync", "--retry-attempts", "2", "--retry-interval", "1", "--log-level", "error"]
    result = CliRunner().invoke(cli, [*args, "--docker-host", f"unix://{sock}"])
    assert result.exit_code == 4, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"registrar: gave up after 3 attempt(s): cannot reach the Docker engine at unix://{sock}"
    )


def test_docker_tls_variables_are_honoured(tmp_path: Any) -> None:
    """DOCKER_TLS_VERIFY with a DOCKER_CERT_PATH that holds no certificates: one line and exit 3."""
    env = {"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)}
    result = CliRunner().invoke(cli, ["plan", "--retry-attempts", "0"], env=env)
    assert result.exit_code == 3, result.output
    assert result.output.startswith("registrar: Docker TLS settings (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH):")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("given", "ip"), [("10.0.0.5/24", "10.0.0.5"), ("fd00:0::1", "fd00::1"), (" 192.0.2.1 ", "192.0.2.1")]
)
def test_ip_flag_is_parsed_as_an_address(given: str, ip: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """--ip is an IP address, IPv4 or IPv6: a prefix length is stripped, IPv6 is written canonically."""
    assert settings_for(["--ip", given], monkeypatch).ip == ip


def test_explain_takes_the_container_then_the_registry_uri() -> None:
    """explain CONTAINER [REGISTRY_URI] with plan's options: the container comes first."""
    command = cli.commands["explain"]
    ctx = command.make_context("explain", ["web", "consul://10.1.2.3:8500", "--explicit", "--json"])
    assert (ctx.params["container"], ctx.params["registry_uri"], ctx.params["explicit"], ctx.params["as_json"]) == (
        "web",
        "consul://10.1.2.3:8500",
        True,
        True,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "Missing argument 'CONTAINER'."), ([" "], "CONTAINER is empty: give a container's name or ID")],
)
def test_explain_without_a_container_is_a_usage_error(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """registrar explain with no container: one line naming the missing argument, exit 2 (not taken for run)."""
    with pytest.raises(SystemExit) as exit:
        main(["explain", *args])
    assert exit.value.code == 2
    assert capsys.readouterr().err == f"registrar: {message}\n"


@pytest.fixture
def explained(monkeypatch: pytest.MonkeyPatch) -> MemoryConsul:
    """explain connected to an in-memory engine holding the recorded web container, and an empty agent."""
    consul = MemoryConsul()
    connected = (Settings(hostname="host1"), MemoryDocker(payload("web")), consul)
    monkeypatch.setattr("registrar.commands._connect", lambda params, shutdown: connected)
    return consul


@pytest.mark.parametrize("name", ["nope", "a/b", "../version", "web?x=1"])
def test_explain_no_such_container_exits_1(
    name: str, explained: MemoryConsul, capsys: pytest.CaptureFixture[str]
) -> None:
    """A container the engine does not know, or a name Docker cannot hold: one line on stderr, exit 1."""
    with pytest.raises(SystemExit) as exit:
        main(["explain", name])
    assert (exit.value.code, *capsys.readouterr()) == (1, "", f"registrar: no such container: {name}\n")


def test_explain_prints_and_exits_0(explained: MemoryConsul) -> None:
    """A known container (by ID, or by Docker's /name form): the text explanation, exit 0; --json parses."""
    cid = payload("web")["Id"]
    result = CliRunner().invoke(cli, ["explain", "/" + cid])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"container rec-web ({cid[:12]}): running\nports:\n")
    assert "  host1:rec-web:80  missing: not on the agent; sync would register it" in result.stdout
    as_json = json.loads(CliRunner().invoke(cli, ["explain", "--json", cid]).stdout)
    assert as_json["agent"] == [
        {"id": "host1:rec-web:80", "state": "missing", "detail": "not on the agent; sync would register it"}
    ]


def test_explain_consul_down_is_exit_5(explained: MemoryConsul, capsys: pytest.CaptureFixture[str]) -> None:
    """The agent failing while explain reads it: one line and exit 5, as plan."""
    explained.down = True
    with pytest.raises(SystemExit) as exit:
        main(["explain", payload("web")["Id"]])
    assert (exit.value.code, capsys.readouterr().err) == (5, "registrar: connection refused\n")


def test_explain_docker_unreachable_is_exit_4(tmp_path: Any) -> None:
    """No Docker engine: explain retries like plan, then one line and exit 4."""
    sock = tmp_path / "no-docker.sock"
    args = ["explain", "web", "--retry-attempts", "0", "--docker-host", f"unix://{sock}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 4, result.output
    assert result.output.startswith("registrar: gave up after 1 attempt(s): cannot reach the Docker engine")
    assert len(result.output.strip().splitlines()) == 1
