"""From a container's ``docker inspect`` JSON to the services it yields (registrator's rules).

Pure: takes the inspect payload and the Settings, returns values. No I/O (save a tag template's
``httpGet``, and only under ``--tags-http``), no logging: problems are returned for the caller to log,
one per bad key, each naming the container and the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registrar.checks import CheckContext, build_checks
from registrar.metadata import BOOLEAN_WORDS, ContainerMetadata, Found, Value, parse_bool, read_metadata, split_tags
from registrar.model import (
    META_CONTAINER,
    META_HOST,
    META_INSTANCE,
    META_SOURCE,
    META_SOURCE_VALUE,
    OWNERSHIP_KEYS,
    Health,
    Problem,
    Service,
    Tagged,
    health_check_id,
)
from registrar.settings import Settings, ip_address_of

#: Metadata keys that configure the registration itself and are not copied into Meta.
RESERVED_KEYS = frozenset({"name", "id", "tags", "ignore", "network", "enable_tag_override"})
IMAGE_ID = re.compile(r"^(sha256:)?[0-9a-f]{12,64}$")
COMPOSE_SERVICE = "com.docker.compose.service"
SWARM_SERVICE = "com.docker.swarm.service.name"
#: Meta of a swarm task: which swarm service and task it is, from the labels Docker puts on the task's container.
SWARM_META = (
    ("swarm-service", SWARM_SERVICE),
    ("swarm-service-id", "com.docker.swarm.service.id"),
    ("swarm-task", "com.docker.swarm.task.name"),
)
INGRESS = "ingress"
INGRESS_ONLY = (
    "a swarm task whose ports are published in ingress mode only: the routing mesh owns them, the task"
    " binds none (publish with mode=host, or run registrar with --internal)"
)
DOCKER_HEALTH = {"starting": "critical", "healthy": "passing", "unhealthy": "critical"}
MAX_HEALTH_OUTPUT = 1024
META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_META_KEYS = 64
MAX_META_VALUE = 512
DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
UNBOUND = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class Port:
    """One candidate port of a container: its own port and where it is published, if anywhere."""

    port: str  # the port inside the container, e.g. "80"
    proto: str  # "tcp" or "udp"
    host_ip: str = ""  # the IPv4 binding (or, with none, the IPv6 one)
    host_port: str = ""
    v6_ip: str = ""  # the IPv6 binding, with its own host port ("::1", or "::" when unbound)
    v6_port: str = ""


@dataclass(frozen=True)
class Yield:
    """What one container yields: its services and the problems met on the way."""

    services: tuple[Service, ...]
    problems: tuple[Problem, ...]
    note: str = ""
    """Why a running container yields nothing, where an operator would not guess it (``INGRESS_ONLY``)."""


NOT_PUBLISHED = "not published (publish it with -p, or run registrar with --internal)"


@dataclass(frozen=True)
class PortOutcome:
    """What one port of a container yielded: a service's ID, or why none (``registrar explain``)."""

    port: Port
    service_id: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Traced:
    """What ``services_from_container`` yields, with the reasons behind it (``registrar explain``)."""

    result: Yield
    skipped: str
    """Why the container as a whole yields nothing (not running, a pod's infra container); "" otherwise."""
    ports: tuple[PortOutcome, ...]
    """Every port looked at, in the order looked at (the ports not published first)."""
    metadata: ContainerMetadata | None
    found: tuple[Found, ...]
    """Every ``SERVICE_*`` entry read, those beaten included."""
    templates: tuple[tuple[str, str, str | None, str], ...] = ()
    """Every tag template rendered: (key, template, output or None, error)."""


def container_name(container: Mapping[str, Any]) -> str:
    """The container's name without Docker's leading slash."""
    return str(container.get("Name") or "").lstrip("/") or str(container.get("Id", ""))[:12]


def is_pod_infra(container: Mapping[str, Any]) -> bool:
    """A Podman pod's infra container (``<pod id>-infra``, a pause image): it holds the pod's network
    and published ports, which the pod's own containers report too, so it yields no service."""
    image = str((container.get("Config") or {}).get("Image") or container.get("Image") or "")
    return container_name(container).endswith("-infra") and image_base_name(image) in ("podman-pause", "pause")


def image_base_name(image: str) -> str:
    """``registry:5000/gliderlabs/foo:1@sha256:..`` -> ``foo``."""
    base = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return base.split(":", 1)[0]


def is_running(container: Mapping[str, Any]) -> bool:
    state = container.get("State") or {}
    return bool(state.get("Running")) and not state.get("Restarting")


def _ports(container: Mapping[str, Any], internal: bool) -> list[Port]:
    config = container.get("Config") or {}
    host_config = container.get("HostConfig") or {}
    exposed = set((config.get("ExposedPorts") or {}).keys())
    published = (container.get("NetworkSettings") or {}).get("Ports") or {}
    found: list[Port] = []
    if host_config.get("NetworkMode") == "host":
        for key in exposed:
            port, _, proto = key.partition("/")
            found.append(Port(port, proto or "tcp", "", port))
    else:
        for key in exposed | set(published):
            port, _, proto = key.partition("/")
            bindings = [
                (str(b.get("HostIp") or ""), str(b["HostPort"])) for b in published.get(key) or [] if b.get("HostPort")
            ]
            # One container port can be published on IPv4 and IPv6 (0.0.0.0 and ::, or 127.0.0.1 and ::1),
            # each binding with its own host port: one service, with an address of each family.
            v4 = [b for b in bindings if ":" not in b[0]]
            v6 = [b for b in bindings if ":" in b[0]]
            if bindings:
                first = (v4 or v6)[0]
                second = v6[0] if v4 and v6 else ("", "")
                found.append(Port(port, proto or "tcp", first[0], first[1], *second))
            elif internal:
                found.append(Port(port, proto or "tcp"))
    if not internal:
        found = [p for p in found if p.host_port]
    return sorted(found, key=lambda p: (int(p.port) if p.port.isdigit() else 0, p.port, p.proto))


def network_owner(container: Mapping[str, Any]) -> str:
    """The container whose network this one shares (``docker run --network container:OWNER``, a pod
    member on Docker): its ID or name as the network mode names it; "" when the network is its own.

    Docker reports no address for such a member, so its addresses are the owner's (registrator follows
    the owner too). Podman's pod members report the pod's addresses themselves: "" for them.
    """
    mode = str((container.get("HostConfig") or {}).get("NetworkMode") or "")
    if not mode.startswith("container:") or any(_container_ips(container, "")):
        return ""
    return mode.removeprefix("container:")


def network_names(container: Mapping[str, Any]) -> list[str]:
    """The networks the container is on (``NetworkSettings.Networks``), sorted."""
    return sorted((container.get("NetworkSettings") or {}).get("Networks") or {})


def _container_ips(container: Mapping[str, Any], network: str) -> tuple[str, str]:
    """The container's IPv4 and global IPv6 address on ``network`` (else its network mode, else the
    first network that has one, ``ingress`` last); empty where unknown."""
    settings = container.get("NetworkSettings") or {}
    networks: Mapping[str, Any] = settings.get("Networks") or {}
    mode = (container.get("HostConfig") or {}).get("NetworkMode") or ""
    order = [network] if network else []
    order += [mode, *sorted(networks, key=lambda name: (name == INGRESS, name))]  # a swarm task's ingress last
    for name in order:
        net = networks.get(name) or {}
        v4, v6 = str(net.get("IPAddress") or ""), str(net.get("GlobalIPv6Address") or "")
        if v4 or v6:
            return v4, v6
    return str(settings.get("IPAddress") or ""), str(settings.get("GlobalIPv6Address") or "")


#: Identity Meta (key, container label), where the label is set; ``image`` comes from Config.Image.
IDENTITY_LABELS = (
    ("compose-project", "com.docker.compose.project"),
    ("compose-service", COMPOSE_SERVICE),
)


def identity_meta(container: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What the container is, as Meta: its image, compose project and service (a swarm task's service and
    task are ``SWARM_META``, which no label replaces)."""
    config = container.get("Config") or {}
    labels = config.get("Labels") or {}
    found = [("image", str(config.get("Image") or ""))]
    found += [(key, str(labels.get(label) or "")) for key, label in IDENTITY_LABELS]
    return [(k, v) for k, v in found if v and len(v.encode()) <= MAX_META_VALUE]


FILTER_KINDS = ("label", "name", "network")
"""``--filter``'s words, with ``docker ps --filter``'s meaning."""


def unmatched_filter(
    container: Mapping[str, Any], networked: Mapping[str, Any], filters: tuple[tuple[str, str], ...]
) -> str:
    """The first ``--filter`` the container does not match (``label=KEY``, ``label=KEY=VALUE``, ``name=RE``:
    a regular expression searched in ``/<name>``, as Docker does, ``network=NAME|ID``), as written; ""
    when it matches all.

    ``networked``: the container whose networks it is on (itself, or the owner of a shared network)."""
    for kind, value in filters:
        if kind == "label":
            labels = (container.get("Config") or {}).get("Labels") or {}
            key, has_value, wanted = value.partition("=")
            matched = key in labels and (not has_value or labels[key] == wanted)
        elif kind == "name":  # as docker ps: searched in the name with its slash (name=^/web$ is exactly web)
            matched = re.search(value, "/" + container_name(container)) is not None
        else:
            networks = (networked.get("NetworkSettings") or {}).get("Networks") or {}
            matched = value in networks or any((n or {}).get("NetworkID") == value for n in networks.values())
        if not matched:
            return f"{kind}={value}"
    return ""


def _printable(text: str) -> bool:
    return text.isprintable() and text.strip() == text and text != ""


class _Builder:
    """Builds the services of one container; collects problems as it goes."""

    def __init__(
        self, container: Mapping[str, Any], settings: Settings, owner: Mapping[str, Any] | None = None
    ) -> None:
        self.container = container
        self.settings = settings
        self.networked: Mapping[str, Any] = container
        """Where the container's addresses are: itself, or the container whose network it shares."""
        self.owner = owner
        self.cid = str(container.get("Id", ""))
        self.name = container_name(container)
        self.config: Mapping[str, Any] = container.get("Config") or {}
        self.labels: Mapping[str, Any] = self.config.get("Labels") or {}
        self.problems: list[Problem] = []
        self.trace: list[PortOutcome] | None = None
        """Set to a list by ``traced_services``, to record each port's outcome; None in the daemon."""
        self.found: list[Found] | None = None
        self.skipped = ""
        self.metadata: ContainerMetadata | None = None
        self.renders: dict[str, tuple[str | None, str]] = {}
        """Tag templates' (output, error) for this container, by template (output None: it failed)."""
        self.templates: dict[tuple[str, str], tuple[str | None, str]] | None = None
        """Set by ``traced_services``: (key, template) -> (output, error), for ``registrar explain``."""
        self.view: Any = None
        """The container as go-dockerclient's Container, for tag templates; built on first use."""

    def skip(self, port: Port, reason: str) -> None:
        """The port yields no service, for this reason (recorded when tracing)."""
        if self.trace is not None:
            self.trace.append(PortOutcome(port, reason=reason))

    def warn(self, value: Value | str, message: str) -> None:
        key = value.source if isinstance(value, Value) else value
        self.problems.append(Problem(self.name, key, message))

    def build(self) -> Yield:
        if not is_running(self.container) or is_pod_infra(self.container):
            if self.trace is not None:
                self.skipped = (
                    f"not running ({(self.container.get('State') or {}).get('Status') or 'stopped'})"
                    if not is_running(self.container)
                    else "a Podman pod's infra container (the pod's containers report its ports)"
                )
            return Yield((), ())
        if self.settings.filters:  # first: a container the filters leave out is not ours to warn about
            networked = self.owner if self.owner is not None and network_owner(self.container) else self.container
            unmatched = unmatched_filter(self.container, networked, self.settings.filters)
            if unmatched:
                if self.trace is not None:
                    self.skipped = f"it does not match --filter {unmatched}"
                return Yield((), ())
        if self.settings.internal and not self.follow_network_owner():
            if self.trace is not None:
                self.skipped = "no address: the container whose network it shares is not running"
            return Yield((), tuple(self.problems))
        metadata = self.metadata = read_metadata(self.config, self.found)
        ports = _ports(self.container, self.settings.internal)
        if self.trace is not None and not self.settings.internal:
            for port in _ports(self.container, internal=True):
                if not port.host_port:
                    self.skip(port, NOT_PUBLISHED)
        group = len(ports) > 1
        services = []
        for port in ports:
            service = self.service(port, metadata.for_port(port.port, port.proto), group)
            if service is not None:
                services.append(service)
                if self.trace is not None:
                    self.trace.append(PortOutcome(port, service.id))
        numbers = sorted({p.port for p in ports}, key=int)
        scoped = [*metadata.per_port.items(), *((p, v) for (p, _), v in metadata.per_protocol.items())]
        for port_key, values in sorted(scoped, key=lambda kv: kv[0]):
            if port_key not in numbers:
                for value in values.values():
                    self.warn(value, f"port {port_key} is not a service port of this container ({numbers or 'none'})")
        note = "" if ports else self.note()
        if note and self.trace is not None:
            self.skipped = note
        return Yield(tuple(services), tuple(dict.fromkeys(self.problems)), note)

    def note(self) -> str:
        """Why a container with no service port yields nothing, where that is worth telling: a swarm task
        on the ingress network publishes its ingress-mode ports on the routing mesh, not on itself."""
        networks = (self.container.get("NetworkSettings") or {}).get("Networks") or {}
        if self.settings.internal or SWARM_SERVICE not in self.labels or INGRESS not in networks:
            return ""
        return INGRESS_ONLY

    def follow_network_owner(self) -> bool:
        """With ``--network container:OWNER``, take the addresses from the owner; False (one warning)
        when the owner is not running: the container has no address then, and yields nothing."""
        ref = network_owner(self.container)
        if not ref:
            return True
        if self.owner is None or not is_running(self.owner):
            self.warn(f"network container:{ref[:12]}", "the container whose network it shares is not running")
            return False
        self.networked = self.owner
        return True

    def service(self, port: Port, meta: dict[str, Value], group: bool) -> Service | None:
        if "ignore" in meta:
            self.skip(port, f"ignored by {meta['ignore'].source}")
            return None
        name = self.service_name(port, meta, group)
        if name is None:
            self.skip(port, f"--explicit, and no usable SERVICE_NAME or SERVICE_{port.port}_NAME")
            return None
        service_id = self.service_id(port, meta, group)
        address, number, tagged = self.address(port, meta)
        if number is None:  # address() said why
            return None
        checks, problems = build_checks(
            meta,
            CheckContext(
                container=self.name,
                service_id=service_id,
                host=address or "127.0.0.1",
                port=number,
                allow_script_checks=self.settings.allow_script_checks,
                ttl=self.settings.ttl,
                exec_checks=self.settings.exec_checks,
            ),
        )
        self.problems.extend(problems)
        return Service(
            id=service_id,
            name=name,
            port=number,
            address=address,
            tags=self.tags(port, meta),
            meta=self.meta(meta),
            checks=checks,
            container_id=self.cid,
            container_name=self.name,
            enable_tag_override=self.flag(meta, "enable_tag_override", False),
            tagged_addresses=tagged,
            health=self.health(service_id, meta),
        )

    def flag(self, meta: Mapping[str, Value], key: str, unset: bool) -> bool:
        """A true/false key; unset, or any other value (one warning), counts as ``unset``."""
        given = meta.get(key)
        if given is None:
            return unset
        value = parse_bool(given.value)
        if value is None:
            self.warn(given, f"{given.value!r} is not a boolean ({BOOLEAN_WORDS}); ignored")
            return unset
        return value

    def health(self, service_id: str, meta: Mapping[str, Value]) -> Health | None:
        """The Docker health check of a container with a HEALTHCHECK: healthy is passing, else critical."""
        health = (self.container.get("State") or {}).get("Health") or {}
        status = health.get("Status")
        if status not in DOCKER_HEALTH or not self.settings.docker_health:
            return None
        if not self.flag(meta, "check_docker_health", True):
            return None
        log = health.get("Log") or [{}]
        output = str((log[-1] or {}).get("Output") or "").strip()[:MAX_HEALTH_OUTPUT]
        return Health(health_check_id(service_id), DOCKER_HEALTH[status], output)

    def service_name(self, port: Port, meta: Mapping[str, Value], group: bool) -> str | None:
        given = meta.get("name")
        if given is not None and not _printable(given.value):
            self.warn(given, f"{given.value!r} is not a usable service name; using the image name")
            given = None
        if given is None and self.settings.explicit:
            return None
        if given is not None:
            name = given.value
            if not DNS_LABEL.match(name):
                self.warn(given, f"service name {name!r} cannot be looked up in Consul DNS")
        else:
            name = self.default_name()
        if group and not (given is not None and given.from_port):
            name = f"{name}-{port.port}"
        return name

    def default_name(self) -> str:
        """A swarm task's service name; else the image's base name; for an image given only by ID or
        digest (compose v2 does that), the compose service label, else the container name (never ``sha256``)."""
        swarm_service = str(self.labels.get(SWARM_SERVICE) or "").strip()
        if swarm_service:
            return swarm_service
        image = str(self.config.get("Image") or "")
        if image and not IMAGE_ID.match(image) and not image.startswith("sha256:"):
            return image_base_name(image) or self.name
        return str(self.labels.get(COMPOSE_SERVICE) or "").strip() or self.name

    def service_id(self, port: Port, meta: Mapping[str, Value], group: bool) -> str:
        instance = self.settings.instance
        default = f"{self.settings.hostname}:{instance + ':' if instance else ''}{self.name}:{port.port}"
        given = meta.get("id")
        if given is not None and (not _printable(given.value) or "/" in given.value or "?" in given.value):
            self.warn(given, f"{given.value!r} is not a usable service ID (no slashes, '?' or control characters)")
            given = None
        if given is None:
            service_id = default
        elif group and not given.from_port:
            # One SERVICE_ID for several ports would make them overwrite each other in Consul.
            service_id = f"{given.value}:{port.port}"
        else:
            service_id = given.value
        return service_id + ":udp" if port.proto == "udp" else service_id

    def address(self, port: Port, meta: Mapping[str, Value]) -> tuple[str, int | None, tuple[Tagged, ...]]:
        """The primary address and port, and every address of each family registrar knows (tagged)."""
        known: dict[str, tuple[str, str]] = {}  # lan_ipv4 / lan_ipv6 -> (address, port)
        if self.settings.internal:
            network = meta.get("network")
            if network is not None and network.value not in network_names(self.networked):
                on = ", ".join(network_names(self.networked)) or "none"
                self.warn(network, f"the container is not on network {network.value!r} (on: {on}); not registered")
                self.skip(port, f"not on network {network.value!r} ({network.source}); it is on: {on}")
                return "", None, ()
            v4, v6 = _container_ips(self.networked, network.value if network else self.settings.network)
            known = {k: (a, port.port) for k, a in (("lan_ipv4", v4), ("lan_ipv6", v6)) if a}
            fallback = ("", port.port)
        else:
            for ip, number in ((port.host_ip, port.host_port), (port.v6_ip, port.v6_port)):
                if number:
                    family = "lan_ipv6" if ":" in ip else "lan_ipv4"
                    given = self.settings.ip if (":" in self.settings.ip) == (family == "lan_ipv6") else ""
                    known.setdefault(family, (given or ("" if ip in UNBOUND else ip), number))
            fallback = (self.settings.ip, port.host_port)
        order = ("lan_ipv6", "lan_ipv4") if self.settings.ipv6 else ("lan_ipv4", "lan_ipv6")
        address, number = next((known[f] for f in order if f in known and known[f][0]), fallback)
        if self.settings.ip and not self.settings.internal:
            # --ip names the address to register, as registrator's -ip did, with its family's host port.
            family = "lan_ipv6" if ":" in self.settings.ip else "lan_ipv4"
            address, number = self.settings.ip, known.get(family, (address, number))[1]
        label = self.settings.use_ip_from_label
        from_label = ((self.config.get("Labels") or {}).get(label) or "").strip() if label else ""
        if from_label:
            parsed = ip_address_of(from_label)
            if parsed is None:
                self.warn(f"label {label}", f"{from_label!r} is not an IP address; the label is ignored")
            else:  # registered, tagged under its family, and in the checks, as --ip is
                address = parsed
                known["lan_ipv6" if ":" in parsed else "lan_ipv4"] = (parsed, number)
        if not number.isdigit() or not 0 < int(number) < 65536:
            self.warn(f"port {port.port}/{port.proto}", f"{number!r} is not a port number")
            self.skip(port, "its host port is not a port number")
            return address, None, ()
        wan = self.settings.wan_ip
        if wan:  # --wan-ip: Consul's wan addresses, with the registered port (NAT, public addresses)
            known["wan"] = known["wan_ipv6" if ":" in wan else "wan_ipv4"] = (wan, number)
        tagged = tuple(
            (family, a, int(n)) for family, (a, n) in sorted(known.items()) if a and n.isdigit() and 0 < int(n) < 65536
        )
        return address, int(number), tagged

    def tags(self, port: Port, meta: Mapping[str, Value]) -> tuple[str, ...]:
        """``SERVICE_[<port>_]TAGS``, then ``--tags``, then ``udp`` for a UDP port; a value holding ``{{`` is a
        Go template, rendered for this container (one that fails: a warning, and none of its tags)."""
        tags: list[str] = []
        given = meta.get("tags")
        text = None if given is None else self.rendered(given.value, given.source)
        for tag in split_tags(text or ""):
            if tag.isprintable():
                tags.append(tag)
            else:
                self.warn(given or "tags", f"tag {tag!r} has control characters and was dropped")
        if self.settings.tags_template:
            tags.extend(split_tags(self.rendered(self.settings.tags_template, "--tags") or ""))
        tags.extend(self.settings.tags)
        if port.proto == "udp":
            tags.append("udp")
        return tuple(dict.fromkeys(tags))

    def rendered(self, text: str, key: str) -> str | None:
        """A tag value as text: as it is without ``{{``, else the template's output for this container
        (rendered once per container); None, with one warning naming the key, when the template fails."""
        if "{{" not in text:
            return text
        if text not in self.renders:
            from registrar import tag_template  # only where a template is used: the plain path imports nothing

            if self.view is None:
                self.view = tag_template.container_view(self.container)
            try:
                self.renders[text] = (tag_template.render(text, self.view, self.settings.tags_http), "")
            except tag_template.TemplateError as e:
                self.renders[text] = (None, str(e))
        output, error = self.renders[text]
        if error:
            self.warn(key, f"tag template failed: {error}; registered without its tags")
        if self.templates is not None:
            self.templates[(key, text)] = (output, error)
        return output

    def meta(self, meta: Mapping[str, Value]) -> tuple[tuple[str, str], ...]:
        """The container's ``SERVICE_<KEY>`` Meta, then ``--meta``'s, then identity Meta (image,
        compose project and service), each where the one before did not set the key, within Consul's
        64 keys; then a swarm task's ``SWARM_META`` and the ownership keys, which nothing replaces."""
        out: dict[str, str] = {}
        ownership = {META_SOURCE: META_SOURCE_VALUE, META_HOST: self.settings.hostname, META_CONTAINER: self.cid[:12]}
        if self.settings.instance:
            ownership[META_INSTANCE] = self.settings.instance
        swarm = {key: str(self.labels[label]) for key, label in SWARM_META if self.labels.get(label)}
        room = MAX_META_KEYS - len(ownership) - 1 - len(swarm)  # 1: the digest, added on the way out
        for key in sorted(meta):
            value = meta[key]
            if key in RESERVED_KEYS or key.startswith("check_"):
                continue
            if not META_KEY.match(key) or key.startswith("consul-") or key in OWNERSHIP_KEYS:
                self.warn(value, f"Meta key {key!r} is not accepted by Consul (letters, digits, _ and - only)")
            elif key in swarm:
                self.warn(value, f"Meta key {key!r} is registrar's, from the swarm task's labels; ignored")
            elif len(value.value.encode()) > MAX_META_VALUE:
                size = len(value.value.encode())
                self.warn(value, f"Meta value is {size} bytes long; Consul takes {MAX_META_VALUE} at most")
            elif len(out) >= room:
                self.warn(value, f"more than {room} Meta keys; Consul takes {MAX_META_KEYS} in all")
            else:
                out[key] = value.value
        for key, text in (*self.settings.meta, *identity_meta(self.container)):
            if key not in out and key not in swarm and len(out) < room:
                out[key] = text
        out.update(swarm)
        out.update(ownership)
        return tuple(sorted(out.items()))


def services_from_container(
    container: Mapping[str, Any], settings: Settings, owner: Mapping[str, Any] | None = None
) -> Yield:
    """The services a container yields under these settings (none unless it is running).

    ``owner``: with ``--internal``, the inspect of the container whose network this one shares
    (``network_owner``), if it has one; None when there is none or it is gone.
    """
    return _Builder(container, settings, owner).build()


def traced_services(container: Mapping[str, Any], settings: Settings, owner: Mapping[str, Any] | None = None) -> Traced:
    """``services_from_container``, by the same rules, recording why each port yields what it yields."""
    builder = _Builder(container, settings, owner)
    builder.trace, builder.found, builder.templates = [], [], {}
    result = builder.build()
    templates = tuple((key, text, *outcome) for (key, text), outcome in builder.templates.items())
    return Traced(result, builder.skipped, tuple(builder.trace), builder.metadata, tuple(builder.found), templates)
