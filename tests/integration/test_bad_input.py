"""Hostile labels against the real agent: Consul accepts every registration registrar sends."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from registrar.consul_sink import ConsulSink
from registrar.services import services_from_container
from registrar.settings import ConsulTarget, Settings
from tests.integration.harness import Consul, unique_host
from tests.labels_strategy import LABELS
from tests.unit.payloads import container, published

PORTS = published("80/tcp=127.0.0.1:30000", "53/udp=127.0.0.1:30002")
HOST = unique_host("prop")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=LABELS)
def test_consul_accepts_whatever_labels_yield(labels: dict[str, str], consul: Consul) -> None:
    """Whatever the labels, each registration registrar builds is accepted by the real Consul agent."""
    sink = ConsulSink(ConsulTarget())
    c = container("multi", labels=labels, ports=PORTS)
    try:
        for service in services_from_container(c, Settings(hostname=HOST)).services:
            sink.register(service)
            assert service.id in consul.services(HOST)
    finally:
        consul.clean(HOST)
        sink.close()
