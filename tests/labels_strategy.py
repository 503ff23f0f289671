"""Hypothesis strategies for hostile container labels, shared by unit and integration tests."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import strategies as st

from registrar.model import Service

KEYS = [
    "NAME", "ID", "TAGS", "IGNORE", "NETWORK", "CHECK_HTTP", "CHECK_HTTPS", "CHECK_HTTP_METHOD", "CHECK_TCP",
    "CHECK_GRPC", "CHECK_GRPC_USE_TLS", "CHECK_TLS_SKIP_VERIFY", "CHECK_SCRIPT", "CHECK_TTL", "CHECK_INTERVAL",
    "CHECK_TIMEOUT", "CHECK_INITIAL_STATUS", "CHECK_DEREGISTER_AFTER", "VERSION", "REGISTRAR-HOST", "CONSUL-X",
    "ENABLE_TAG_OVERRIDE", "CHECK_DOCKER_HEALTH", "CHECK_2_HTTP", "CHECK_2_TCP", "CHECK_3_TTL", "CHECK_9_SCRIPT",
    "CHECK_2_INTERVAL", "CHECK_2_TIMEOUT", "CHECK_2_INITIAL_STATUS", "CHECK_1_HTTP", "CHECK_10_TCP",
    "CHECK_HEADER_X-Test", "CHECK_2_HEADER_Accept", "CHECK_HEADER_", "CHECK_BODY", "CHECK_2_NOTES",
    "CHECK_OUTPUT_MAX_SIZE", "CHECK_SUCCESS_BEFORE_PASSING", "CHECK_2_FAILURES_BEFORE_CRITICAL",
]  # fmt: skip
"""Every key but TLS_SERVER_NAME and H2PING, which Consul before 1.10 (the suite's 1.8.7) refuses."""
VALUES = st.one_of(
    st.sampled_from(
        ["", "true", "false", "10s", "-5s", "0s", "1m30s", "banana", "/health", "a/b", "passing", "GET", "3", "0"]
    ),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=500, max_size=700),
    st.sampled_from(["x" * 513, "\x00\x07\n", "名前", "a,b\\,c", "é" * 64, "$SERVICE_IP:$SERVICE_PORT"]),
)
KEY_NAMES = st.one_of(
    st.builds(lambda k: f"SERVICE_{k}", st.sampled_from(KEYS)),
    st.builds(
        lambda p, k: f"SERVICE_{p}_{k}", st.sampled_from(["80", "443", "53", "0080", "99999"]), st.sampled_from(KEYS)
    ),
    st.builds(lambda k: f"SERVICE_{k}", st.text(min_size=1, max_size=20)),
    st.text(max_size=20),
)
LABELS = st.dictionaries(KEY_NAMES, VALUES, max_size=25)

_META_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")


def assert_valid_for_consul(service: Service) -> None:
    """The registration obeys every rule of Consul's that registrar knows of."""
    body: dict[str, Any] = service.to_consul()
    assert body["Name"] and body["ID"] and body["Name"].isprintable()
    assert "/" not in body["ID"] and body["ID"].isprintable()
    assert 0 < body["Port"] < 65536
    meta = body["Meta"]
    assert len(meta) <= 64
    for key, value in meta.items():
        assert _META_KEY.match(key) and not key.startswith("consul-"), key
        assert len(value.encode()) <= 512
    assert all(tag.isprintable() for tag in body.get("Tags", []))
    assert body.get("EnableTagOverride", True) is True
    ids = [check["CheckID"] for check in body.get("Checks", [])]
    assert len(set(ids)) == len(ids), ids
    for check in body.get("Checks", []):
        kinds = [k for k in ("HTTP", "TCP", "GRPC", "H2PING", "TTL", "Args") if k in check]
        assert len(kinds) == 1, check
        for field in ("OutputMaxSize", "SuccessBeforePassing", "FailuresBeforeCritical"):
            assert isinstance(check.get(field, 0), int) and check.get(field, 0) >= 0, check
        for name, values in check.get("Header", {}).items():
            assert name.isascii() and name.isprintable() and " " not in name, check
            assert values and all(v.isprintable() for v in values), check
        for field in ("TTL", "Interval", "Timeout", "DeregisterCriticalServiceAfter"):
            if field in check:
                assert _DURATION.match(check[field]), check
        assert check.get("Status", "passing") in ("passing", "warning", "critical")
