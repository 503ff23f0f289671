"""Consul checks from SERVICE_[<port>_]CHECK_* keys."""

from __future__ import annotations

from typing import Any

import pytest

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
