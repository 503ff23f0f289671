"""From a container's ``docker inspect`` JSON to the services it yields (registrator's rules): which ports,
and for each its name, ID, tags, checks and Docker health; the addresses come from registrar.addresses, the
Meta from registrar.service_meta.

Pure: takes the inspect payload and the Settings, returns values. No I/O (save a tag template's
``httpGet``, and only under ``--tags-http``), no logging: problems are returned for the caller to log,
one per bad key, each naming the container and the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registrar.addresses import INGRESS, Port, candidate_ports, network_owner, service_address
from registrar.checks import CheckContext, build_checks
from registrar.container import (
    COMPOSE_SERVICE,
    IMAGE_ID,
    SWARM_SERVICE,
    container_name,
    image_base_name,
    is_pod_infra,
    is_running,
    unmatched_filter,
)
from registrar.metadata import BOOLEAN_WORDS, ContainerMetadata, Found, Value, parse_bool, read_metadata, split_tags
from registrar.model import Health, Problem, Service, health_check_id
from registrar.service_meta import service_meta
from registrar.settings import Settings

INGRESS_ONLY = (
    "a swarm task whose ports are published in ingress mode only: the routing mesh owns them, the task"
    " binds none (publish with mode=host, or run registrar with --internal)"
)
DOCKER_HEALTH = {"starting": "critical", "healthy": "passing", "unhealthy": "critical"}
MAX_HEALTH_OUTPUT = 1024
DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


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
        ports = candidate_ports(self.container, self.settings.internal)
        if self.trace is not None and not self.settings.internal:
            for port in candidate_ports(self.container, internal=True):
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
        address, number, tagged = service_address(
            port, meta, self.settings, self.networked, self.labels, self.warn, self.skip
        )
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
                host_checks=self.settings.host_checks,
            ),
        )
        self.problems.extend(problems)
        return Service(
            id=service_id,
            name=name,
            port=number,
            address=address,
            tags=self.tags(port, meta),
            meta=service_meta(meta, self.container, self.settings, self.warn),
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
