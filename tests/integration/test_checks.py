"""Several checks per service and Consul's check vocabulary, as the real agent runs and shows them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.integration.harness import Consul, run_cli, wait_until

Run = Callable[..., Any]

# An HTTP server that answers each request with the request itself, its lines and then its body: what
# the agent's HTTP check sent shows in the check's output. nc forks one /echo per connection, and the
# agent's two checks can connect at once: each keeps its request in a file of its own (/tmp/req.<pid>).
ECHO = "\n".join(
    [
        "#!/bin/sh",
        "len=0",
        'while IFS= read -r line; do line=$(printf %s "$line" | tr -d "\\r"); [ -z "$line" ] && break',
        '  echo "$line" >> /tmp/req.$$; case "$line" in [Cc]ontent-[Ll]ength:*) len=${line#*: };; esac',
        "done",
        'body=$(head -c "$len"); printf "HTTP/1.0 200 OK\\r\\n\\r\\n"; cat /tmp/req.$$; rm /tmp/req.$$',
        'printf "\\n%s" "$body"',
    ]
)
ECHO_COMMAND = ["sh", "-c", f"cat > /echo <<'EOF'\n{ECHO}\nEOF\nchmod +x /echo && exec nc -ll -p 80 -e /echo"]


def checks_by_id(consul: Consul, service_id: str) -> dict[str, dict[str, Any]]:
    return {c["CheckID"]: c for c in consul.checks(service_id)}


def planned_checks(host: str, service_id: str) -> dict[str, dict[str, Any]]:
    """The checks ``plan --json`` would send for one service, by CheckID."""
    result = run_cli("plan", "--json", "--hostname", host)
    assert result.returncode == 0, result.stderr
    (row,) = [r for r in json.loads(result.stdout) if r["id"] == service_id]
    return {ch["CheckID"]: ch for ch in row["service"]["Checks"]}


def all_passing(consul: Consul, service_id: str, count: int) -> dict[str, dict[str, Any]]:
    """The service's checks once there are ``count`` and all pass (wait on it); else nothing."""
    checks = checks_by_id(consul, service_id)
    return checks if len(checks) == count and all(c["Status"] == "passing" for c in checks.values()) else {}


def sync(host: str, *flags: str) -> None:
    result = run_cli("sync", "--hostname", host, *flags)
    assert result.returncode == 0, result.stderr


def test_two_checks_of_different_kinds_both_pass(host: str, consul: Consul, containers: Run) -> None:
    """CHECK_HTTP and CHECK_2_TCP on one service: two checks on the agent, service:<id> (HTTP) and
    service:<id>:2 (TCP), and both pass."""
    c = containers(
        labels={
            "SERVICE_CHECK_HTTP": "/",
            "SERVICE_CHECK_INTERVAL": "1s",
            "SERVICE_CHECK_2_TCP": "true",
            "SERVICE_CHECK_2_INTERVAL": "1s",
        }
    )
    service_id = f"{host}:{c.name}:80"
    sync(host)
    checks = wait_until(lambda: all_passing(consul, service_id, 2), "both checks passing")
    assert {k: v["Type"] for k, v in checks.items()} == {
        f"service:{service_id}": "http",
        f"service:{service_id}:2": "tcp",
    }


def test_a_bad_value_drops_only_its_check(host: str, consul: Consul, containers: Run) -> None:
    """CHECK_2_INTERVAL=banana: check 2 is left out with one warning naming the container and the key;
    the service and check 1 are registered."""
    c = containers(
        labels={"SERVICE_CHECK_TCP": "true", "SERVICE_CHECK_2_HTTP": "/", "SERVICE_CHECK_2_INTERVAL": "banana"}
    )
    service_id = f"{host}:{c.name}:80"
    result = run_cli("sync", "--hostname", host)
    assert result.returncode == 0, result.stderr
    assert list(checks_by_id(consul, service_id)) == [f"service:{service_id}"]
    warnings = [line for line in result.stderr.splitlines() if "SERVICE_CHECK_2_INTERVAL" in line]
    assert len(warnings) == 1 and c.name in warnings[0] and "banana" in warnings[0]


def test_a_check_whose_labels_go_leaves_the_agent(host: str, consul: Consul, containers: Run) -> None:
    """The container is replaced by one of the same name (same service ID) without CHECK_2_*: the next
    sync registers the service again, and check 2 is gone from the agent."""
    labels = {"SERVICE_CHECK_TCP": "true", "SERVICE_CHECK_2_HTTP": "/"}
    first = containers(labels=labels, name=f"{host}-web")
    service_id = f"{host}:{first.name}:80"
    sync(host)
    assert sorted(checks_by_id(consul, service_id)) == [f"service:{service_id}", f"service:{service_id}:2"]
    first.remove(force=True)
    containers(labels={"SERVICE_CHECK_TCP": "true"}, name=first.name)
    sync(host)
    assert list(checks_by_id(consul, service_id)) == [f"service:{service_id}"]


def test_checks_gone_while_registrar_was_away_leave_the_agent(
    host: str, consul: Consul, containers: Run, daemon: Any
) -> None:
    """registrar stops; the container is replaced by one of the same name whose labels define only check
    2; the next registrar's first reconcile leaves exactly that check on the agent (check 1 is gone)."""
    first = containers(labels={"SERVICE_CHECK_TCP": "true", "SERVICE_CHECK_2_HTTP": "/"}, name=f"{host}-web")
    service_id = f"{host}:{first.name}:80"
    registrar = daemon("--hostname", host)
    expected = [f"service:{service_id}", f"service:{service_id}:2"]
    wait_until(lambda: sorted(checks_by_id(consul, service_id)) == expected, "checks 1 and 2 on the agent")
    assert registrar.stop() == 0
    first.remove(force=True)
    containers(labels={"SERVICE_CHECK_2_HTTP": "/"}, name=first.name)
    daemon("--hostname", host)
    wait_until(
        lambda: list(checks_by_id(consul, service_id)) == [f"service:{service_id}:2"], "only check 2 on the agent"
    )


def test_checks_of_flags_dropped_at_a_restart_leave_the_agent(
    host: str, consul: Consul, containers: Run, daemon: Any
) -> None:
    """registrar restarts without --allow-script-checks and --ttl: the same container's registration is
    written again in place, and the agent drops the script check (it no longer runs the command) and the
    TTL check (it would turn critical); check 2 stays."""
    c = containers(labels={"SERVICE_CHECK_SCRIPT": "true", "SERVICE_CHECK_2_TCP": "true"})
    service_id = f"{host}:{c.name}:80"
    script, second, ttl = (f"service:{service_id}{suffix}" for suffix in ("", ":2", ":ttl"))
    first = daemon("--hostname", host, "--allow-script-checks", "--ttl", "60")
    wait_until(lambda: sorted(checks_by_id(consul, service_id)) == [script, second, ttl], "three checks on the agent")
    assert first.stop() == 0
    daemon("--hostname", host)
    wait_until(lambda: list(checks_by_id(consul, service_id)) == [second], "only check 2 on the agent")


def test_http_vocabulary_reaches_the_agent(host: str, consul: Consul, containers: Run) -> None:
    """HTTP_METHOD, HEADER_<Name>, BODY and NOTES of check 1, and OUTPUT_MAX_SIZE of check 2: the agent
    sends that request (the echo server shows it in the check's output), shows the notes, and keeps no
    more output than asked."""
    c = containers(
        command=ECHO_COMMAND,
        labels={
            "SERVICE_CHECK_HTTP": "/echo",
            "SERVICE_CHECK_HTTP_METHOD": "PUT",
            "SERVICE_CHECK_HEADER_X-Registrar-Test": "one,two",
            "SERVICE_CHECK_BODY": '{"ping": 1}',
            "SERVICE_CHECK_NOTES": "the echo server",
            "SERVICE_CHECK_INTERVAL": "1s",
            "SERVICE_CHECK_2_HTTP": "/second",
            "SERVICE_CHECK_2_OUTPUT_MAX_SIZE": "16",
            "SERVICE_CHECK_2_INTERVAL": "1s",
        },
    )
    service_id = f"{host}:{c.name}:80"
    sync(host)
    checks = wait_until(lambda: all_passing(consul, service_id, 2), "both checks passing")
    first = checks[f"service:{service_id}"]
    assert first["Notes"] == "the echo server"
    request = first["Output"].split(" Output: ", 1)[1].splitlines()
    assert request[0] == "PUT /echo HTTP/1.1"
    assert [line for line in request if line.startswith("X-Registrar-Test")] == [
        "X-Registrar-Test: one",
        "X-Registrar-Test: two",
    ]
    assert request[-1] == '{"ping": 1}'
    second = checks[f"service:{service_id}:2"]
    assert len(second["Output"].split(" Output: ", 1)[1]) <= 16


def test_thresholds_are_sent_and_accepted(host: str, consul: Consul, containers: Run) -> None:
    """SUCCESS_BEFORE_PASSING and FAILURES_BEFORE_CRITICAL are in plan --json's body as numbers, and the
    agent takes the registration with both checks (Consul 1.8.7 shows no trace of them once stored)."""
    c = containers(
        labels={
            "SERVICE_CHECK_TCP": "true",
            "SERVICE_CHECK_SUCCESS_BEFORE_PASSING": "3",
            "SERVICE_CHECK_2_HTTP": "/",
            "SERVICE_CHECK_2_FAILURES_BEFORE_CRITICAL": "4",
        }
    )
    service_id = f"{host}:{c.name}:80"
    checks = planned_checks(host, service_id)
    assert checks[f"service:{service_id}"]["SuccessBeforePassing"] == 3
    assert checks[f"service:{service_id}:2"]["FailuresBeforeCritical"] == 4
    sync(host)
    assert sorted(checks_by_id(consul, service_id)) == sorted(checks)


def test_tls_server_name_and_h2ping_are_in_the_plan(host: str, containers: Run) -> None:
    """TLS_SERVER_NAME and H2PING (Consul 1.10 and later) are in plan --json's body as they would be sent."""
    c = containers(
        labels={
            "SERVICE_CHECK_HTTPS": "/health",
            "SERVICE_CHECK_TLS_SERVER_NAME": "api.example.com",
            "SERVICE_CHECK_2_H2PING": "true",
            "SERVICE_CHECK_2_TLS_SKIP_VERIFY": "true",
        }
    )
    service_id = f"{host}:{c.name}:80"
    checks = planned_checks(host, service_id)
    c.reload()
    port = c.ports["80/tcp"][0]["HostPort"]
    assert checks[f"service:{service_id}"]["TLSServerName"] == "api.example.com"
    assert checks[f"service:{service_id}:2"] == {
        "CheckID": f"service:{service_id}:2",
        "H2PING": f"127.0.0.1:{port}",
        "Interval": "10s",
        "TLSSkipVerify": True,
    }
