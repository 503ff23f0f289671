"""Property: no label set makes parsing raise, and what would reach Consul is always valid."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from registrar.services import services_from_container
from registrar.settings import Settings
from tests.labels_strategy import LABELS, assert_valid_for_consul
from tests.unit.payloads import container, published

PORTS = published("80/tcp=127.0.0.1:30000", "443/tcp=0.0.0.0:30001", "53/udp=127.0.0.1:30002")


@settings(max_examples=400, deadline=None)
@given(
    labels=LABELS,
    env=st.lists(st.text(max_size=30), max_size=5),
    internal=st.booleans(),
    scripts=st.booleans(),
)
def test_any_labels_parse_and_yield_valid_registrations(
    labels: dict[str, str], env: list[str], internal: bool, scripts: bool
) -> None:
    """Random labels and env never raise; every service satisfies Consul's rules; every problem names its key."""
    c = container("multi", labels=labels, env=env, ports=PORTS)
    result = services_from_container(c, Settings(hostname="h", internal=internal, allow_script_checks=scripts))
    for service in result.services:
        assert_valid_for_consul(service)
    for problem in result.problems:
        assert problem.container == "rec-multi" and problem.key
