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


@pytest.mark.parametrize(
    ("uri", "environ", "expected"),
    [
        (None, {"CONSUL_HTTP_SSL": "true"}, ConsulTarget("https", "127.0.0.1", 8500)),
        (None, {"CONSUL_HTTP_ADDR": "a:8501", "CONSUL_HTTP_SSL": "1"}, ConsulTarget("https", "a", 8501)),
        (None, {"CONSUL_HTTP_ADDR": "http://a:8501", "CONSUL_HTTP_SSL": "T"}, ConsulTarget("https", "a", 8501)),
        (None, {"CONSUL_HTTP_ADDR": "https://a:8501", "CONSUL_HTTP_SSL": "false"}, ConsulTarget("https", "a", 8501)),
        (None, {"CONSUL_HTTP_ADDR": "a:8500", "CONSUL_HTTP_SSL": "False"}, ConsulTarget("http", "a", 8500)),
        (
            None,
            {"CONSUL_HTTP_ADDR": "unix:///run/c.sock", "CONSUL_HTTP_SSL": "true"},
            ConsulTarget("unix", socket_path="/run/c.sock"),
        ),
        ("consul://b:1", {"CONSUL_HTTP_ADDR": "https://a:2", "CONSUL_HTTP_SSL": "true"}, ConsulTarget("http", "b", 1)),
        ("consul-tls://b:1", {"CONSUL_HTTP_ADDR": "a:2"}, ConsulTarget("https", "b", 1)),
        (None, {"CONSUL_HTTP_ADDR": "a:2", "CONSUL_HTTP_SSL": ""}, ConsulTarget("http", "a", 2)),
    ],
)
def test_consul_http_ssl_and_the_address(uri: str | None, environ: dict[str, str], expected: ConsulTarget) -> None:
    """CONSUL_HTTP_SSL=true makes CONSUL_HTTP_ADDR (or the default) HTTPS as Consul's Go client does, even an
    http:// one, never a unix socket; the registry URI's scheme beats it and CONSUL_HTTP_ADDR."""
    assert parse_registry_uri(uri, environ) == expected


def test_consul_tls_variables_are_read() -> None:
    """CONSUL_CAPATH, CONSUL_TLS_SERVER_NAME and CONSUL_HTTP_SSL_VERIFY come from the environment given."""
    target = parse_registry_uri(
        "consul-tls://127.0.0.2:8501",
        {"CONSUL_CAPATH": "/etc/cas", "CONSUL_TLS_SERVER_NAME": "server.dc1.consul", "CONSUL_HTTP_SSL_VERIFY": "f"},
    )
    assert (target.ca_path, target.tls_server_name, target.verify) == ("/etc/cas", "server.dc1.consul", False)
    assert parse_registry_uri(None, {}).verify is True, "verified unless told otherwise"


@pytest.mark.parametrize("value", ["1", "t", "T", "TRUE", "true", "True"])
def test_go_true_values(value: str) -> None:
    """Each spelling of true that Go's strconv.ParseBool takes turns CONSUL_HTTP_SSL_VERIFY on."""
    assert parse_registry_uri(None, {"CONSUL_HTTP_SSL_VERIFY": value}).verify is True
    assert parse_registry_uri(None, {"CONSUL_HTTP_SSL": value}).scheme == "https"


@pytest.mark.parametrize("value", ["0", "f", "F", "FALSE", "false", "False"])
def test_go_false_values(value: str) -> None:
    """Each spelling of false that Go's strconv.ParseBool takes turns CONSUL_HTTP_SSL_VERIFY off."""
    assert parse_registry_uri(None, {"CONSUL_HTTP_SSL_VERIFY": value}).verify is False
    assert parse_registry_uri(None, {"CONSUL_HTTP_SSL": value}).scheme == "http"


@pytest.mark.parametrize("name", ["CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY"])
@pytest.mark.parametrize("value", ["yes", "no", "on", "tRuE", " true", "2"])
def test_a_bad_boolean_is_a_config_error_naming_the_variable(name: str, value: str) -> None:
    """A value Go's ParseBool refuses is a one-line ConfigError that names the variable (not silently ignored)."""
    with pytest.raises(ConfigError) as error:
        parse_registry_uri("consul://a:1", {name: value})
    assert str(error.value).startswith(f"{name}=") and "\n" not in str(error.value)
