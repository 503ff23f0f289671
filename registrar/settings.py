"""One place for configuration: the frozen Settings and the parsing of the registry URI.

The environment is read once, from a mapping passed in (never ``os.environ`` directly), and the
precedence between flags and the standard ``CONSUL_*`` variables is decided here, not in py-consul.
"""

from __future__ import annotations

import ipaddress
import math
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from registrar.errors import ConfigError
from registrar.model import CATALOG_OUTPUT_SYNC_SECONDS, HEALTH_REFRESH_SECONDS

DEFAULT_REGISTRY = "consul://127.0.0.1:8500"
SCHEMES = ("consul", "consul-tls", "consul-unix")
DEREGISTER_MODES = ("always", "on-success")
NODE_TTL_BOUNDS = (10, 86400)
"""``--node-ttl``'s least and greatest seconds: Consul's bounds of a session TTL."""
_GO_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h))+$")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class ConsulTarget:
    """Where and how to reach the Consul agent."""

    scheme: str = "http"
    """``http``, ``https`` or ``unix``."""
    host: str = "127.0.0.1"
    port: int = 8500
    socket_path: str = ""
    """The agent's unix socket, for ``consul-unix://``."""
    token: str = field(default="", repr=False)
    """ACL token, sent as the X-Consul-Token header; never printed."""
    ca_file: str = ""
    """CONSUL_CACERT: the CA file the agent's certificate is checked against (else the system's CAs)."""
    ca_path: str = ""
    """CONSUL_CAPATH: a directory of CA certificates (``c_rehash``'s layout), as ``ca_file``."""
    cert_file: str = ""
    """CONSUL_CLIENT_CERT: the certificate registrar presents (an agent with ``verify_incoming``)."""
    key_file: str = ""
    """CONSUL_CLIENT_KEY: its private key."""
    verify: bool = True
    """CONSUL_HTTP_SSL_VERIFY: check the agent's certificate (False: no check at all, no CA needed)."""
    tls_server_name: str = ""
    """CONSUL_TLS_SERVER_NAME: the name the agent's certificate must hold, sent as SNI, whatever address
    is dialled ("": the host dialled)."""

    def describe(self) -> str:
        """Where the agent is, for messages (never with the token)."""
        if self.scheme == "unix":
            return f"unix://{self.socket_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    """Everything the daemon and the one-shot commands need, fixed at start."""

    hostname: str = ""
    """Host identity in service IDs and ownership Meta; empty until resolved from ``docker info``."""
    ip: str = ""
    """Address registered for published ports."""
    internal: bool = False
    """Register the container's own address and exposed port."""
    explicit: bool = False
    """Only containers/ports with a SERVICE_NAME / SERVICE_<port>_NAME."""
    tags: tuple[str, ...] = ()
    """Tags added to every service."""
    resync: float = 0
    """Seconds between full reconciles; 0 turns the periodic resync off."""
    cleanup: bool = False
    """Accepted for compatibility: stale registrations of this host are always removed."""
    deregister: str = "always"
    """On container exit: ``always`` remove its services, or only when it did not crash (``on-success``:
    exit 0, or a signal's 128+N)."""
    retry_attempts: int = 10
    """Attempts to reach Consul at start; -1 retries forever."""
    retry_interval_ms: int = 1000
    """Milliseconds between those attempts."""
    ttl: int = 0
    """Seconds of a TTL check registrar adds to each service and keeps passing; 0 = none."""
    ttl_refresh: int = 0
    """Seconds between TTL passes; 0 means half the TTL."""
    use_ip_from_label: str = ""
    """Container label whose value is the address to register."""
    allow_script_checks: bool = False
    """Allow SERVICE_CHECK_SCRIPT (runs commands on the Consul agent's host)."""
    docker_host: str = ""
    """Docker endpoint; empty = DOCKER_HOST, else the local socket."""
    consul: ConsulTarget = ConsulTarget()
    log_format: str = "auto"
    log_level: str = "info"
    metrics_addr: str = ""
    """host:port of the metrics and health endpoints; empty turns them off."""
    ipv6: bool = False
    """Register the IPv6 address as the primary one where one is known (tagged addresses carry both)."""
    network: str = ""
    """With ``internal``: the network whose addresses are registered (``SERVICE_NETWORK`` beats it)."""
    drain_on_stop: bool = True
    """On ``docker stop`` (the ``kill`` event with the container's stop signal), put the container's
    services in maintenance at once, so balancers stop sending before the process exits."""
    docker_health: bool = True
    """Mirror Docker's HEALTHCHECK status in a Consul check (``--docker-health on|off``)."""
    exec_checks: bool = True
    """Run ``SERVICE_CHECK_EXEC`` probes in containers (``--exec-checks on|off``)."""
    forget_hosts: tuple[str, ...] = ()
    """Other host identities whose registrations ``plan``/``sync`` remove (a renamed host's)."""
    ip_from: str = ""
    """``--ip`` as given when it names an interface or a range (``ip`` is its address now); "" otherwise."""
    wan_ip: str = ""
    """``--wan-ip``: the address of Consul's ``wan`` tagged addresses; "" for none."""
    wan_ip_from: str = ""
    """``--wan-ip`` as given when it names an interface or a range; "" otherwise."""
    instance: str = ""
    """``--instance``: part of the ownership (Meta ``registrar-instance``) and of default service IDs, so
    registrars of other instances on this host and agent never touch these registrations."""
    forget_instances: tuple[str, ...] = ()
    """Other instance names of this host whose registrations ``plan``/``sync`` remove (a renamed instance's)."""
    filters: tuple[tuple[str, str], ...] = ()
    """``--filter``: (``label``|``name``|``network``, value) pairs a container must all match to be registered."""
    meta: tuple[tuple[str, str], ...] = ()
    """``--meta``: Meta added to every service (a container's own ``SERVICE_<KEY>`` beats it)."""
    tags_template: str = ""
    """``--tags`` when it is a Go template (it holds ``{{``): rendered for each container, checked at start;
    ``tags`` is empty then."""
    tags_http: bool = False
    """``--tags-http``: a tag template's ``httpGet`` fetches its URL (off: calling it is the template's error)."""
    catalog: bool = False
    """``--catalog``: ``consul`` is a Consul HTTP endpoint (any agent or server) whose catalog this host joins
    as an external node of its own (NodeMeta ``external-node=true``), named ``hostname``, at ``ip``; no agent
    runs on this host (registrar.catalog_sink)."""
    node_ttl: int = 30
    """``run --catalog``: seconds of the TTL of the Consul session that keeps this host's node alive
    (registrar.catalog_liveness); a node whose session is gone is removed by the registrars that live."""
    catalog_checks: str = "registrar"
    """``--catalog-checks``: who runs the HTTP, TCP and gRPC checks of this host's services with ``--catalog``:
    ``registrar`` (from the host, registrar.host_checks) or ``esm`` (consul-esm, from their Definition)."""

    @property
    def host_checks(self) -> bool:
        """registrar runs HTTP, TCP and gRPC checks from the host: ``--catalog``, not ``--catalog-checks esm``."""
        return self.catalog and self.catalog_checks == "registrar"

    @property
    def ttl_refresh_seconds(self) -> float:
        return float(self.ttl_refresh) if self.ttl_refresh > 0 else max(self.ttl / 2, 1)

    @property
    def health_refresh_seconds(self) -> float | None:
        """Seconds between sending every Docker health and probe result again: before an agent's TTL check runs
        out; with ``--catalog`` (no TTL) as often as the agent syncs output; None when there is nothing to send."""
        if self.catalog:
            return CATALOG_OUTPUT_SYNC_SECONDS
        return HEALTH_REFRESH_SECONDS if self.docker_health or self.exec_checks else None


def parse_node_ttl(text: str) -> int:
    """``--node-ttl``: a Go duration (``30s``, ``1m``, ``1m30s``), or bare seconds, as whole seconds (a fraction
    rounds up); ValueError, its message fit for a usage error, for anything else or outside Consul's 10 s to 24 h."""
    value = text.strip()
    if value.isdigit():
        value += "s"
    if not _GO_DURATION.match(value):
        raise ValueError("not a duration: write it as Go does (30s, 1m, 1m30s)")
    seconds = sum(float(n) * _GO_UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", value))
    least, most = NODE_TTL_BOUNDS
    if not least <= seconds <= most:
        raise ValueError(f"a Consul session's TTL is {least}s to {most // 3600}h")
    return math.ceil(seconds)


def ip_address_of(text: str) -> str | None:
    """The IP address in ``text``, IPv4 or IPv6, without a prefix length (Rancher's labels hold
    ``10.42.7.9/16``; registrator strips it) and in its canonical form; None if it holds none."""
    try:
        return str(ipaddress.ip_interface(text.strip()).ip)
    except ValueError:
        return None


def parse_registry_uri(uri: str | None, environ: Mapping[str, str]) -> ConsulTarget:
    """Parse REGISTRY_URI, or else CONSUL_HTTP_ADDR, or else the default, and the CONSUL_* variables, as
    Consul's own clients read them (its Go ``api`` package): CONSUL_HTTP_SSL=true makes an address given
    without ``unix://`` HTTPS (the registry URI's scheme decides for it); booleans as Go's
    ``strconv.ParseBool`` reads them, a bad one a ConfigError naming the variable."""
    use_tls = _env_bool(environ, "CONSUL_HTTP_SSL", False)
    verify = _env_bool(environ, "CONSUL_HTTP_SSL_VERIFY", True)
    text = uri or _consul_addr_uri(environ.get("CONSUL_HTTP_ADDR", "") or DEFAULT_REGISTRY, use_tls)
    parsed = urllib.parse.urlsplit(text)
    scheme = parsed.scheme
    if scheme not in SCHEMES:
        raise ConfigError(
            f"unknown registry URI scheme {scheme or '(none)'!r} in {text!r}: use one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    common = ConsulTarget(
        token=environ.get("CONSUL_HTTP_TOKEN", ""),
        ca_file=environ.get("CONSUL_CACERT", ""),
        ca_path=environ.get("CONSUL_CAPATH", ""),
        cert_file=environ.get("CONSUL_CLIENT_CERT", ""),
        key_file=environ.get("CONSUL_CLIENT_KEY", ""),
        verify=verify,
        tls_server_name=environ.get("CONSUL_TLS_SERVER_NAME", ""),
    )
    if scheme == "consul-unix":
        path = parsed.path or parsed.netloc
        if not path:
            raise ConfigError(f"registry URI {text!r} names no socket path (consul-unix:///path/to.sock)")
        return replace(common, scheme="unix", socket_path=path)
    try:
        host = parsed.hostname or "127.0.0.1"
        port = parsed.port or 8500
    except ValueError:
        raise ConfigError(f"registry URI {text!r} has an invalid port") from None
    return replace(common, scheme="https" if scheme == "consul-tls" else "http", host=host, port=port)


#: What Go's ``strconv.ParseBool`` takes, as Consul's clients read their boolean variables.
_GO_BOOLS = {v: True for v in ("1", "t", "T", "TRUE", "true", "True")} | {
    v: False for v in ("0", "f", "F", "FALSE", "false", "False")
}


def _env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean variable (unset or empty: ``default``); anything Go's ParseBool refuses is a ConfigError."""
    value = environ.get(name, "")
    if not value:
        return default
    try:
        return _GO_BOOLS[value]
    except KeyError:
        raise ConfigError(f"{name}={value!r} is not a boolean: use true or false (or 1, 0, t, f)") from None


def _consul_addr_uri(addr: str, use_tls: bool) -> str:
    """CONSUL_HTTP_ADDR (``host:port``, ``http://host:port``, ``https://...``, ``unix:///p``) as a registry URI;
    ``use_tls`` (CONSUL_HTTP_SSL) makes it HTTPS unless it is a unix socket (Go's client never goes back to
    plain HTTP once TLS was asked for, not even for ``http://``)."""
    scheme, found, rest = addr.partition("://")
    if not found:
        scheme, rest = "consul", addr
    elif scheme in ("http", "https", "unix"):
        scheme = {"http": "consul", "https": "consul-tls", "unix": "consul-unix"}[scheme]
    if use_tls and scheme == "consul":
        scheme = "consul-tls"
    return f"{scheme}://{rest}"
