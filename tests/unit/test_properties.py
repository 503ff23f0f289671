"""Properties: no label set makes parsing raise, what would reach Consul is always valid, and the desired
state kept up to date container by container is the one computed anew."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from registrar.desired import DesiredState, Observed
from registrar.model import Service
from registrar.reconcile import desired_state
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


# A container: (ID, name, the service IDs it yields, a port that makes its registration differ).
CONTAINER_STATES = st.tuples(
    st.sampled_from("abcd"),
    st.sampled_from(["web", "api", "db"]),
    st.lists(st.sampled_from(["s1", "s2", "s3"]), max_size=2, unique=True),
    st.integers(1, 3),
)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(CONTAINER_STATES, st.booleans()), max_size=25))
def test_desired_state_kept_one_container_at_a_time_equals_it_computed_anew(
    steps: list[tuple[tuple[str, str, list[str], int], bool]],
) -> None:
    """After any sequence of containers learned and forgotten, the cache's desired state is desired_state's."""
    cache = DesiredState(Settings(hostname="h"))
    for (cid, name, ids, port), gone in steps:
        services = tuple(Service(i, i, port, container_id=cid, container_name=name + cid) for i in ids)
        cache.record(cid, None if gone else Observed(0, name + cid, services))
    ordered = sorted(cache.containers.values(), key=lambda c: c.name)
    assert cache.services == desired_state(c.services for c in ordered)[0]
