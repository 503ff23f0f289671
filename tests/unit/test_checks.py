"""Consul checks from SERVICE_[<port>_]CHECK_* keys."""

from __future__ import annotations

from typing import Any

import pytest

from registrar.model import Probe
from registrar.services import services_from_container
from registrar.settings import Settings
from tests.unit.payloads import container, published

S = Settings(hostname="h")


def checks_of(labels: dict[str, str], settings: Settings = S, binding: str = "127.0.0.1:30000") -> list[dict[str, Any]]:
    c = container("plain", labels=labels, ports=published(f"80/tcp={binding}"))
    (service,) = services_from_container(c, settings).services
    return [check.to_consul() for check in service.checks]


def problem_keys(labels: dict[str, str], settings: Settings = S) -> list[str]:
    c = container("plain", labels=labels, ports=published("80/tcp=127.0.0.1:30000"))
    return [p.key for p in services_from_container(c, settings).problems]


ID = "service:h:rec-plain:80"


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"SERVICE_CHECK_HTTP": "/health"}, {"HTTP": "http://127.0.0.1:30000/health", "Interval": "10s"}),
        (
            {"SERVICE_CHECK_HTTPS": "/h", "SERVICE_CHECK_TLS_SKIP_VERIFY": "true"},
            {"HTTP": "https://127.0.0.1:30000/h", "Interval": "10s", "TLSSkipVerify": True},
        ),
        (
            {"SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_HTTP_METHOD": "head", "SERVICE_CHECK_TIMEOUT": "2s"},
            {"HTTP": "http://127.0.0.1:30000/", "Method": "HEAD", "Interval": "10s", "Timeout": "2s"},
        ),
        ({"SERVICE_CHECK_TCP": "true", "SERVICE_CHECK_INTERVAL": "5s"}, {"TCP": "127.0.0.1:30000", "Interval": "5s"}),
        ({"SERVICE_CHECK_GRPC": "true"}, {"GRPC": "127.0.0.1:30000", "Interval": "10s"}),
        (
            {"SERVICE_CHECK_GRPC": "true", "SERVICE_CHECK_GRPC_USE_TLS": "true"},
            {"GRPC": "127.0.0.1:30000", "GRPCUseTLS": True, "Interval": "10s"},
        ),
        ({"SERVICE_CHECK_TTL": "30s"}, {"TTL": "30s"}),
        (
            {
                "SERVICE_CHECK_TCP": "1",
                "SERVICE_CHECK_INITIAL_STATUS": "passing",
                "SERVICE_CHECK_DEREGISTER_AFTER": "1m",
            },
            {"TCP": "127.0.0.1:30000", "Interval": "10s", "Status": "passing", "DeregisterCriticalServiceAfter": "1m"},
        ),
        (
            {"SERVICE_80_CHECK_HTTP": "/port", "SERVICE_CHECK_HTTP": "/general"},
            {"HTTP": "http://127.0.0.1:30000/port", "Interval": "10s"},
        ),
        ({"SERVICE_CHECK_TCP": "false"}, None),
    ],
)
def test_label_checks(labels: dict[str, str], expected: dict[str, Any] | None) -> None:
    """Each CHECK_* label becomes the Consul check registrator would send."""
    assert checks_of(labels) == ([{"CheckID": ID, **expected}] if expected else [])


def test_check_targets_loopback_when_address_unknown() -> None:
    """A port published on all interfaces is checked by the local agent at 127.0.0.1."""
    assert checks_of({"SERVICE_CHECK_TCP": "true"}, binding="0.0.0.0:30000")[0]["TCP"] == "127.0.0.1:30000"


def test_ipv6_check_target_is_bracketed() -> None:
    """An IPv6 service address is written [addr]:port in the check."""
    checks = checks_of({"SERVICE_CHECK_HTTP": "/"}, Settings(hostname="h", ip="::1"))
    assert checks[0]["HTTP"] == "http://[::1]:30000/"


@pytest.mark.parametrize(
    ("labels", "key"),
    [
        ({"SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_INTERVAL": "banana"}, "label SERVICE_CHECK_INTERVAL"),
        ({"SERVICE_CHECK_TTL": "-5s"}, "label SERVICE_CHECK_TTL"),
        ({"SERVICE_CHECK_TTL": "0s"}, "label SERVICE_CHECK_TTL"),
        ({"SERVICE_CHECK_TCP": "1", "SERVICE_CHECK_TIMEOUT": "10"}, "label SERVICE_CHECK_TIMEOUT"),
        ({"SERVICE_CHECK_TCP": "1", "SERVICE_CHECK_INITIAL_STATUS": "great"}, "label SERVICE_CHECK_INITIAL_STATUS"),
        ({"SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_HTTP_METHOD": "GET /"}, "label SERVICE_CHECK_HTTP_METHOD"),
        ({"SERVICE_CHECK_HTTP": "/a b"}, "label SERVICE_CHECK_HTTP"),
        ({"SERVICE_CHECK_SCRIPT": "curl localhost"}, "label SERVICE_CHECK_SCRIPT"),
    ],
)
def test_malformed_check_is_dropped_service_kept(labels: dict[str, str], key: str) -> None:
    """A malformed check value drops the check with one problem naming the key; the service stays."""
    assert checks_of(labels) == []
    assert problem_keys(labels) == [key]


def test_script_check_needs_opt_in_and_substitutes() -> None:
    """CHECK_SCRIPT is split into arguments with $SERVICE_IP/$SERVICE_PORT, only with --allow-script-checks."""
    settings = Settings(hostname="h", allow_script_checks=True)
    checks = checks_of({"SERVICE_CHECK_SCRIPT": "nc -z $SERVICE_IP '$SERVICE_PORT'"}, settings)
    assert checks == [{"CheckID": ID, "Args": ["nc", "-z", "127.0.0.1", "30000"], "Interval": "10s"}]


def test_ttl_flag_adds_registrar_ttl_check() -> None:
    """--ttl adds a passing TTL check of that many seconds, beside the label check."""
    checks = checks_of({"SERVICE_CHECK_TCP": "true"}, Settings(hostname="h", ttl=30))
    assert checks[1] == {"CheckID": ID + ":ttl", "TTL": "30s", "Status": "passing"}


BOOLEAN_WORDS = ("true", "false", "1", "0", "yes", "no", "on", "off", "TRUE", "Off", " yes ")


@pytest.mark.parametrize("word", BOOLEAN_WORDS)
def test_every_boolean_key_reads_the_same_words(word: str) -> None:
    """One reading of true/false/1/0/yes/no/on/off (any case) for every boolean key: the TCP and gRPC
    checks, TLS options, EnableTagOverride and the Docker health check, with no warning."""
    truth = word.strip().lower() in ("true", "1", "yes", "on")
    tcp = checks_of({"SERVICE_CHECK_TCP": word})
    assert tcp == ([{"CheckID": ID, "TCP": "127.0.0.1:30000", "Interval": "10s"}] if truth else [])
    grpc = checks_of({"SERVICE_CHECK_GRPC": "true", "SERVICE_CHECK_GRPC_USE_TLS": word})
    assert grpc[0].get("GRPCUseTLS", False) is truth
    https = checks_of({"SERVICE_CHECK_HTTPS": "/", "SERVICE_CHECK_TLS_SKIP_VERIFY": word})
    assert https[0].get("TLSSkipVerify", False) is truth
    c = container("plain", labels={"SERVICE_ENABLE_TAG_OVERRIDE": word}, ports=published("80/tcp=127.0.0.1:30000"))
    result = services_from_container(c, S)
    assert result.services[0].enable_tag_override is truth and result.problems == ()
    assert problem_keys({"SERVICE_CHECK_TCP": word, "SERVICE_CHECK_DOCKER_HEALTH": word}) == []


@pytest.mark.parametrize(
    ("labels", "checks", "key"),
    [
        ({"SERVICE_CHECK_TCP": "nope"}, [], "label SERVICE_CHECK_TCP"),
        ({"SERVICE_CHECK_GRPC": "sure"}, [], "label SERVICE_CHECK_GRPC"),
        (
            {"SERVICE_CHECK_HTTPS": "/h", "SERVICE_CHECK_TLS_SKIP_VERIFY": "banana"},
            [{"CheckID": ID, "HTTP": "https://127.0.0.1:30000/h", "Interval": "10s"}],
            "label SERVICE_CHECK_TLS_SKIP_VERIFY",
        ),
    ],
)
def test_a_boolean_key_with_another_word_is_one_warning_and_dropped(
    labels: dict[str, str], checks: list[dict[str, Any]], key: str
) -> None:
    """SERVICE_CHECK_TCP=nope adds no TCP check; any word that is not a boolean is one warning naming the
    key, and that key is dropped (the check it modifies stays)."""
    assert checks_of(labels) == checks
    assert problem_keys(labels) == [key]


def test_numbered_checks_each_have_their_own_id_and_fields() -> None:
    """SERVICE_CHECK_<N>_* (N = 2..9) defines check N beside the unnumbered check 1, with CheckID
    service:<id>:<N>; each check reads only its own keys (check 1's INTERVAL is not check 2's)."""
    labels = {
        "SERVICE_CHECK_HTTP": "/health",
        "SERVICE_CHECK_INTERVAL": "5s",
        "SERVICE_CHECK_2_TCP": "true",
        "SERVICE_CHECK_2_TIMEOUT": "1s",
        "SERVICE_CHECK_9_TTL": "30s",
    }
    assert checks_of(labels) == [
        {"CheckID": ID, "HTTP": "http://127.0.0.1:30000/health", "Interval": "5s"},
        {"CheckID": ID + ":2", "TCP": "127.0.0.1:30000", "Interval": "10s", "Timeout": "1s"},
        {"CheckID": ID + ":9", "TTL": "30s"},
    ]
    assert problem_keys(labels) == []


def test_numbered_check_without_check_one() -> None:
    """A numbered check stands on its own: CHECK_3_HTTP alone is check 3, with no check 1."""
    assert checks_of({"SERVICE_CHECK_3_HTTP": "/"}) == [
        {"CheckID": ID + ":3", "HTTP": "http://127.0.0.1:30000/", "Interval": "10s"}
    ]


def test_numbered_check_scopes_and_env() -> None:
    """A numbered key follows the label rules: SERVICE_<port>_CHECK_2_* beats SERVICE_CHECK_2_*, and a
    label beats an environment variable."""
    c = container(
        "plain",
        labels={"SERVICE_80_CHECK_2_HTTP": "/port", "SERVICE_CHECK_2_HTTP": "/general"},
        env=["SERVICE_CHECK_2_INTERVAL=3s", "SERVICE_CHECK_2_TIMEOUT=9s"],
        ports=published("80/tcp=127.0.0.1:30000"),
    )
    c["Config"]["Labels"]["SERVICE_CHECK_2_TIMEOUT"] = "2s"
    (service,) = services_from_container(c, S).services
    assert [check.to_consul() for check in service.checks] == [
        {"CheckID": ID + ":2", "HTTP": "http://127.0.0.1:30000/port", "Interval": "3s", "Timeout": "2s"}
    ]


def test_a_bad_numbered_check_drops_only_that_check() -> None:
    """A malformed value in check 2 drops check 2 with one problem naming the key; check 1, check 3 and
    the service stay."""
    labels = {
        "SERVICE_CHECK_TCP": "true",
        "SERVICE_CHECK_2_HTTP": "/",
        "SERVICE_CHECK_2_INTERVAL": "banana",
        "SERVICE_CHECK_3_TTL": "1m",
    }
    assert [c["CheckID"] for c in checks_of(labels)] == [ID, ID + ":3"]
    assert problem_keys(labels) == ["label SERVICE_CHECK_2_INTERVAL"]


@pytest.mark.parametrize(
    "key",
    ["SERVICE_CHECK_1_HTTP", "SERVICE_CHECK_0_HTTP", "SERVICE_CHECK_10_HTTP", "SERVICE_CHECK_2_HTTPP",
     "SERVICE_CHECK_2_DOCKER_HEALTH", "SERVICE_CHECK_2_", "SERVICE_CHECK_HEADER_"],
)  # fmt: skip
def test_numbers_outside_two_to_nine_are_unknown_options(key: str) -> None:
    """Check 1 is the unnumbered keys; CHECK_1_, CHECK_0_, CHECK_10_, an unknown field, a numbered Docker
    health key or a header without a name is one "unknown check option" problem, and no check."""
    c = container("plain", labels={key: "/"}, ports=published("80/tcp=127.0.0.1:30000"))
    result = services_from_container(c, S)
    assert result.services[0].checks == ()
    assert [(p.key, p.message) for p in result.problems] == [(f"label {key}", "unknown check option; ignored")]


def test_numbered_keys_are_not_meta() -> None:
    """CHECK_<N>_* keys configure checks and are never copied into the service's Meta."""
    labels = {"SERVICE_CHECK_2_HTTP": "/", "SERVICE_CHECK_2_HEADER_X-A": "1", "SERVICE_80_CHECK_3_TTL": "1m"}
    c = container("plain", labels=labels, ports=published("80/tcp=127.0.0.1:30000"))
    (service,) = services_from_container(c, S).services
    assert not [k for k, _ in service.meta if k.startswith("check")]


HTTP = {"CheckID": ID, "HTTP": "http://127.0.0.1:30000/", "Interval": "10s"}


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"SERVICE_CHECK_HTTP_METHOD": "post"}, {**HTTP, "Method": "POST"}),
        (
            {"SERVICE_CHECK_HEADER_X-Request-Id": "a, b", "SERVICE_CHECK_HEADER_Accept": r"text/html\, text/plain"},
            {**HTTP, "Header": {"Accept": ["text/html, text/plain"], "X-Request-Id": ["a", "b"]}},
        ),
        ({"SERVICE_CHECK_BODY": '{"ping": 1}'}, {**HTTP, "Body": '{"ping": 1}'}),
        ({"SERVICE_CHECK_TLS_SERVER_NAME": "api.example.com"}, {**HTTP, "TLSServerName": "api.example.com"}),
        ({"SERVICE_CHECK_TLS_SKIP_VERIFY": "yes"}, {**HTTP, "TLSSkipVerify": True}),
        ({"SERVICE_CHECK_SUCCESS_BEFORE_PASSING": "3"}, {**HTTP, "SuccessBeforePassing": 3}),
        ({"SERVICE_CHECK_FAILURES_BEFORE_CRITICAL": "0"}, {**HTTP, "FailuresBeforeCritical": 0}),
        ({"SERVICE_CHECK_NOTES": "the front page"}, {**HTTP, "Notes": "the front page"}),
        ({"SERVICE_CHECK_OUTPUT_MAX_SIZE": "64"}, {**HTTP, "OutputMaxSize": 64}),
        ({"SERVICE_CHECK_INITIAL_STATUS": "Critical"}, {**HTTP, "Status": "critical"}),
        ({"SERVICE_CHECK_DEREGISTER_AFTER": "90s"}, {**HTTP, "DeregisterCriticalServiceAfter": "90s"}),
    ],
)
def test_check_vocabulary_in_the_body(labels: dict[str, str], expected: dict[str, Any]) -> None:
    """Each field of Consul's check vocabulary reaches the body sent, beside SERVICE_CHECK_HTTP=/; a
    header's name is sent as written, its values split at commas (\\, is a comma)."""
    assert checks_of({"SERVICE_CHECK_HTTP": "/", **labels}) == [expected]
    assert problem_keys({"SERVICE_CHECK_HTTP": "/", **labels}) == []


def test_check_vocabulary_of_a_numbered_check() -> None:
    """Check 2 takes the same vocabulary under CHECK_2_, its header name as written."""
    labels = {
        "SERVICE_CHECK_2_HTTPS": "/h",
        "SERVICE_CHECK_2_HTTP_METHOD": "PUT",
        "SERVICE_CHECK_2_HEADER_Authorization": "Bearer x",
        "SERVICE_CHECK_2_BODY": "{}",
        "SERVICE_CHECK_2_NOTES": "n",
        "SERVICE_CHECK_2_SUCCESS_BEFORE_PASSING": "2",
        "SERVICE_CHECK_2_FAILURES_BEFORE_CRITICAL": "4",
        "SERVICE_CHECK_2_OUTPUT_MAX_SIZE": "100",
        "SERVICE_CHECK_2_TLS_SERVER_NAME": "h.example",
    }
    assert checks_of(labels) == [
        {
            "CheckID": ID + ":2",
            "HTTP": "https://127.0.0.1:30000/h",
            "Method": "PUT",
            "Header": {"Authorization": ["Bearer x"]},
            "Body": "{}",
            "TLSServerName": "h.example",
            "Interval": "10s",
            "Notes": "n",
            "SuccessBeforePassing": 2,
            "FailuresBeforeCritical": 4,
            "OutputMaxSize": 100,
        }
    ]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"SERVICE_CHECK_H2PING": "true"}, {"H2PING": "127.0.0.1:30000", "Interval": "10s"}),
        (
            {
                "SERVICE_CHECK_H2PING": "on",
                "SERVICE_CHECK_TLS_SKIP_VERIFY": "1",
                "SERVICE_CHECK_TLS_SERVER_NAME": "a.b",
            },
            {"H2PING": "127.0.0.1:30000", "Interval": "10s", "TLSSkipVerify": True, "TLSServerName": "a.b"},
        ),
        (
            {"SERVICE_CHECK_GRPC": "true", "SERVICE_CHECK_GRPC_USE_TLS": "true", "SERVICE_CHECK_TLS_SERVER_NAME": "g"},
            {"GRPC": "127.0.0.1:30000", "GRPCUseTLS": True, "TLSServerName": "g", "Interval": "10s"},
        ),
        (
            {"SERVICE_CHECK_TCP": "true", "SERVICE_CHECK_NOTES": "n", "SERVICE_CHECK_FAILURES_BEFORE_CRITICAL": "2"},
            {"TCP": "127.0.0.1:30000", "Interval": "10s", "Notes": "n", "FailuresBeforeCritical": 2},
        ),
        (
            {"SERVICE_CHECK_TTL": "1m", "SERVICE_CHECK_NOTES": "pushed by cron", "SERVICE_CHECK_OUTPUT_MAX_SIZE": "9"},
            {"TTL": "1m", "Notes": "pushed by cron", "OutputMaxSize": 9},
        ),
        ({"SERVICE_CHECK_H2PING": "false"}, None),
    ],
)
def test_h2ping_and_vocabulary_of_other_kinds(labels: dict[str, str], expected: dict[str, Any] | None) -> None:
    """H2PING=true is an HTTP/2 ping of addr:port, after the other kinds; the TLS fields go with gRPC and
    H2PING, NOTES and the counters with any kind."""
    assert checks_of(labels) == ([{"CheckID": ID, **expected}] if expected else [])


@pytest.mark.parametrize(
    ("labels", "key"),
    [
        ({"SERVICE_CHECK_HEADER_X A": "1"}, "label SERVICE_CHECK_HEADER_X A"),
        ({"SERVICE_CHECK_HEADER_Nämé": "1"}, "label SERVICE_CHECK_HEADER_Nämé"),
        ({"SERVICE_CHECK_HEADER_X-A": "ok\r\nX-Evil: 1"}, "label SERVICE_CHECK_HEADER_X-A"),
        ({"SERVICE_CHECK_HEADER_X-A": " , "}, "label SERVICE_CHECK_HEADER_X-A"),
        ({"SERVICE_CHECK_TLS_SERVER_NAME": "a b"}, "label SERVICE_CHECK_TLS_SERVER_NAME"),
        ({"SERVICE_CHECK_SUCCESS_BEFORE_PASSING": "-1"}, "label SERVICE_CHECK_SUCCESS_BEFORE_PASSING"),
        ({"SERVICE_CHECK_FAILURES_BEFORE_CRITICAL": "two"}, "label SERVICE_CHECK_FAILURES_BEFORE_CRITICAL"),
        ({"SERVICE_CHECK_OUTPUT_MAX_SIZE": "0"}, "label SERVICE_CHECK_OUTPUT_MAX_SIZE"),
        ({"SERVICE_CHECK_OUTPUT_MAX_SIZE": "4k"}, "label SERVICE_CHECK_OUTPUT_MAX_SIZE"),
    ],
)
def test_malformed_vocabulary_drops_the_check(labels: dict[str, str], key: str) -> None:
    """A malformed vocabulary value drops that check with one problem naming the key; the service stays."""
    both = {"SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_2_TCP": "true", **labels}
    assert [c["CheckID"] for c in checks_of(both)] == [ID + ":2"]
    assert problem_keys(both) == [key]


def test_h2ping_with_another_word_is_one_warning() -> None:
    """H2PING is a true/false key: another word is one warning naming it, and no H2PING check."""
    assert checks_of({"SERVICE_CHECK_2_H2PING": "sure"}) == []
    assert problem_keys({"SERVICE_CHECK_2_H2PING": "sure"}) == ["label SERVICE_CHECK_2_H2PING"]


def test_a_removed_check_changes_the_digest() -> None:
    """A container whose labels no longer define check 2 yields a service with another digest, so the
    registration is written again (with replace-existing-checks, the agent drops check 2)."""
    two = {"SERVICE_CHECK_TCP": "true", "SERVICE_CHECK_2_HTTP": "/"}
    ports = published("80/tcp=127.0.0.1:30000")
    (before,) = services_from_container(container("plain", labels=two, ports=ports), S).services
    (after,) = services_from_container(
        container("plain", labels={"SERVICE_CHECK_TCP": "true"}, ports=ports), S
    ).services
    assert before.id == after.id and before.digest != after.digest


def probes_of(labels: dict[str, str], settings: Settings = S) -> tuple[Probe, ...]:
    c = container("plain", labels=labels, ports=published("80/tcp=127.0.0.1:30000"))
    (service,) = services_from_container(c, settings).services
    return service.probes


def test_exec_check_is_a_ttl_check_registrar_runs() -> None:
    """CHECK_EXEC: a TTL check naming the command in its Notes; the command split like a shell would, no shell."""
    labels = {"SERVICE_CHECK_EXEC": "wget -q -O- 'http://localhost/x y'", "SERVICE_CHECK_INTERVAL": "2s"}
    assert checks_of(labels) == [
        {"CheckID": ID, "TTL": "45s", "Notes": "registrar runs in the container: wget -q -O- 'http://localhost/x y'"}
    ]
    assert probes_of(labels) == (Probe(ID, ("wget", "-q", "-O-", "http://localhost/x y"), 2.0, 2.0, 4096),)


def test_numbered_exec_check_with_its_own_fields() -> None:
    """CHECK_2_EXEC beside an HTTP check 1: check 2's ID, interval, timeout and output size; NOTES beats the default."""
    labels = {
        "SERVICE_CHECK_HTTP": "/",
        "SERVICE_CHECK_2_EXEC": "true",
        "SERVICE_CHECK_2_INTERVAL": "1m",
        "SERVICE_CHECK_2_TIMEOUT": "5s",
        "SERVICE_CHECK_2_OUTPUT_MAX_SIZE": "100",
        "SERVICE_CHECK_2_NOTES": "ours",
    }
    assert checks_of(labels)[1] == {"CheckID": f"{ID}:2", "TTL": "186s", "Notes": "ours"}
    assert probes_of(labels) == (Probe(f"{ID}:2", ("true",), 60.0, 5.0, 100),)


@pytest.mark.parametrize(
    ("labels", "probe", "key"),
    [
        ({"SERVICE_CHECK_INTERVAL": "1ns"}, (1.0, 1.0, 4096), "label SERVICE_CHECK_INTERVAL"),
        ({"SERVICE_CHECK_TIMEOUT": "1h"}, (10.0, 10.0, 4096), "label SERVICE_CHECK_TIMEOUT"),
        (
            {"SERVICE_CHECK_INTERVAL": "2m", "SERVICE_CHECK_TIMEOUT": "90s"},
            (120.0, 60.0, 4096),
            "label SERVICE_CHECK_TIMEOUT",
        ),
        ({"SERVICE_CHECK_OUTPUT_MAX_SIZE": "999999999"}, (10.0, 10.0, 65536), "label SERVICE_CHECK_OUTPUT_MAX_SIZE"),
    ],
)
def test_exec_bounds_are_one_warning_and_the_bound_is_used(
    labels: dict[str, str], probe: tuple[float, float, int], key: str
) -> None:
    """An interval under 1 s, a timeout over the interval or 60 s, output over 64 KiB: one warning, the bound used."""
    labels = {"SERVICE_CHECK_EXEC": "true", **labels}
    (found,) = probes_of(labels)
    assert (found.interval, found.timeout, found.output_max) == probe
    assert problem_keys(labels) == [key]


@pytest.mark.parametrize("command", ["   ", "sh -c 'unclosed"])
def test_an_exec_command_that_cannot_run_drops_the_check(command: str) -> None:
    """A blank command or one that cannot be split: that check dropped, one warning naming the key."""
    labels = {"SERVICE_CHECK_EXEC": command, "SERVICE_CHECK_2_TCP": "true"}
    assert problem_keys(labels) == ["label SERVICE_CHECK_EXEC"]
    assert [c["CheckID"] for c in checks_of(labels)] == [f"{ID}:2"]


@pytest.mark.parametrize(
    ("labels", "keys", "kinds"),
    [
        ({"SERVICE_CHECK_TTL": "30s", "SERVICE_CHECK_EXEC": "true"}, ["label SERVICE_CHECK_EXEC"], ["TTL"]),
        ({"SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_TCP": "true"}, ["label SERVICE_CHECK_TCP"], ["HTTP"]),
        ({"SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_TCP": "false"}, [], ["HTTP"]),
        (
            {"SERVICE_CHECK_2_TCP": "true", "SERVICE_CHECK_2_GRPC": "1", "SERVICE_CHECK_HTTP": "/"},
            ["label SERVICE_CHECK_2_GRPC"],
            ["HTTP", "TCP"],
        ),
    ],
)
def test_a_second_kind_in_one_check_is_one_warning(labels: dict[str, str], keys: list[str], kinds: list[str]) -> None:
    """One kind a check (registrator's first-wins order): each other kind set in the same check is one warning."""
    assert problem_keys(labels) == keys
    assert [next(k for k in ("HTTP", "TTL", "TCP", "GRPC") if k in c) for c in checks_of(labels)] == kinds


def test_with_catalog_registrar_runs_http_tcp_and_grpc_checks_itself() -> None:
    """--catalog: HTTP, TCP and gRPC checks are kept as they are (their Definition is written) and run by
    registrar: its interval, timeout, output maximum and thresholds."""
    labels = {
        "SERVICE_CHECK_HTTP": "/health",
        "SERVICE_CHECK_INTERVAL": "5s",
        "SERVICE_CHECK_SUCCESS_BEFORE_PASSING": "2",
        "SERVICE_CHECK_FAILURES_BEFORE_CRITICAL": "3",
        "SERVICE_CHECK_OUTPUT_MAX_SIZE": "100",
        "SERVICE_CHECK_2_TCP": "true",
        "SERVICE_CHECK_2_TIMEOUT": "1s",
        "SERVICE_CHECK_3_GRPC": "true",
        "SERVICE_CHECK_4_H2PING": "true",
    }
    catalog = Settings(hostname="h", catalog=True, ip="127.0.0.1")
    http, tcp, grpc = probes_of(labels, catalog)
    assert (http.check_id, http.interval, http.timeout, http.output_max) == (ID, 5.0, 5.0, 100)
    assert (http.passing_after, http.critical_after) == (2, 3)
    assert http.target is not None and http.target.http == "http://127.0.0.1:30000/health"
    assert (tcp.check_id, tcp.interval, tcp.timeout) == (f"{ID}:2", 10.0, 1.0)
    assert tcp.target is not None and tcp.target.tcp == "127.0.0.1:30000"
    assert grpc.target is not None and grpc.target.grpc == "127.0.0.1:30000"
    assert checks_of(labels, catalog)[0]["HTTP"].endswith("/health")
    assert problem_keys(labels, catalog) == ["label SERVICE_CHECK_4_H2PING"]


@pytest.mark.parametrize(
    ("kind", "interval", "timeout", "expected"),
    [
        ("TCP", "", "", (10.0, 10.0)),
        ("TCP", "30s", "", (30.0, 10.0)),
        ("TCP", "5s", "", (5.0, 5.0)),
        ("TCP", "5s", "2s", (5.0, 2.0)),
        ("TCP", "5s", "8s", (5.0, 5.0)),
        ("TCP", "30s", "20s", (30.0, 20.0)),
        ("GRPC", "5s", "", (5.0, 10.0)),
        ("GRPC", "5s", "8s", (5.0, 8.0)),
    ],
)
def test_a_check_registrar_runs_is_timed_as_the_agent_times_it(
    kind: str, interval: str, timeout: str, expected: tuple[float, float]
) -> None:
    """The agent's rules (agent/checks/check.go): TIMEOUT if under the interval, else the interval if under 10 s,
    else 10 s; gRPC: TIMEOUT, else 10 s."""
    labels = {f"SERVICE_CHECK_{kind}": "true"}
    labels |= {"SERVICE_CHECK_INTERVAL": interval} if interval else {}
    labels |= {"SERVICE_CHECK_TIMEOUT": timeout} if timeout else {}
    (found,) = probes_of(labels, Settings(hostname="h", catalog=True, ip="127.0.0.1"))
    assert (found.interval, found.timeout) == expected


def test_an_interval_under_a_second_is_one_warning_and_a_second_is_used() -> None:
    """An interval under the agent's least (1 s) for a check registrar runs: one warning naming the key, 1 s."""
    labels = {"SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_INTERVAL": "1ms"}
    catalog = Settings(hostname="h", catalog=True, ip="127.0.0.1")
    (found,) = probes_of(labels, catalog)
    assert (found.interval, found.timeout) == (1.0, 1.0)
    assert problem_keys(labels, catalog) == ["label SERVICE_CHECK_INTERVAL"]


def test_a_grpc_check_over_tls_without_verification_is_one_warning_with_catalog() -> None:
    """grpcio cannot skip verifying a server: GRPC_USE_TLS with TLS_SKIP_VERIFY is one warning naming the key."""
    labels = {"SERVICE_CHECK_GRPC": "true", "SERVICE_CHECK_GRPC_USE_TLS": "true", "SERVICE_CHECK_TLS_SKIP_VERIFY": "1"}
    assert problem_keys(labels, Settings(hostname="h", catalog=True, ip="127.0.0.1")) == [
        "label SERVICE_CHECK_TLS_SKIP_VERIFY"
    ]
    assert problem_keys(labels) == []


@pytest.mark.parametrize(
    "settings", [S, Settings(hostname="h", catalog=True, ip="127.0.0.1", catalog_checks="esm")], ids=["agent", "esm"]
)
def test_an_agent_or_consul_esm_runs_http_checks_not_registrar(settings: Settings) -> None:
    """With an agent, or --catalog-checks esm, registrar runs no HTTP or TCP check."""
    assert probes_of({"SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_2_TCP": "true"}, settings) == ()
