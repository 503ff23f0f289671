"""Registry URI parsing and the precedence of the CONSUL_* variables."""

from __future__ import annotations

import pytest

from registrar.errors import ConfigError
from registrar.settings import ConsulTarget, parse_registry_uri


@pytest.mark.parametrize(
    ("uri", "environ", "expected"),
    [
        (None, {}, ConsulTarget("http", "127.0.0.1", 8500)),
        ("consul://10.0.0.1:8501", {}, ConsulTarget("http", "10.0.0.1", 8501)),
        ("consul://agent", {}, ConsulTarget("http", "agent", 8500)),
        ("consul-tls://agent:8501", {}, ConsulTarget("https", "agent", 8501)),
        ("consul-unix:///run/consul.sock", {}, ConsulTarget("unix", socket_path="/run/consul.sock")),
        (None, {"CONSUL_HTTP_ADDR": "10.1.1.1:8500"}, ConsulTarget("http", "10.1.1.1", 8500)),
        (None, {"CONSUL_HTTP_ADDR": "https://a:8501"}, ConsulTarget("https", "a", 8501)),
        ("consul://b:1", {"CONSUL_HTTP_ADDR": "a:2"}, ConsulTarget("http", "b", 1)),
        ("consul://[::1]:8500", {}, ConsulTarget("http", "::1", 8500)),
    ],
)
def test_registry_uri(uri: str | None, environ: dict[str, str], expected: ConsulTarget) -> None:
    """REGISTRY_URI beats CONSUL_HTTP_ADDR, which beats the default; each scheme maps to its transport."""
    assert parse_registry_uri(uri, environ) == expected


def test_consul_variables_are_read() -> None:
    """Token and TLS files come from the standard CONSUL_* variables."""
    target = parse_registry_uri(
        None,
        {"CONSUL_HTTP_TOKEN": "s3cret", "CONSUL_CACERT": "/ca", "CONSUL_CLIENT_CERT": "/c", "CONSUL_CLIENT_KEY": "/k"},
    )
    assert (target.token, target.ca_file, target.cert_file, target.key_file) == ("s3cret", "/ca", "/c", "/k")
    assert "s3cret" not in repr(target) and "s3cret" not in target.describe()


@pytest.mark.parametrize("uri", ["etcd://x:1", "consul://x:notaport", "consul-unix://", "nonsense"])
def test_bad_registry_uri(uri: str) -> None:
    """A URI registrar cannot use is a ConfigError with a one-line message."""
    with pytest.raises(ConfigError) as error:
        parse_registry_uri(uri, {})
    assert "\n" not in str(error.value)
