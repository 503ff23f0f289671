"""Where a container's services are reached: its candidate ports (published, or exposed with ``--internal``),
its networks' addresses, and the address and port registered for one port. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from registrar.metadata import Value, Warn
from registrar.model import Tagged
from registrar.settings import Settings, ip_address_of

INGRESS = "ingress"
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


def candidate_ports(container: Mapping[str, Any], internal: bool) -> list[Port]:
    """The ports that may yield a service: the published ones, and with ``internal`` the exposed ones too."""
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


def service_address(
    port: Port,
    meta: Mapping[str, Value],
    settings: Settings,
    networked: Mapping[str, Any],
    labels: Mapping[str, Any],
    warn: Warn,
    skip: Callable[[Port, str], None],
) -> tuple[str, int | None, tuple[Tagged, ...]]:
    """The primary address and port, and every address of each family registrar knows (tagged).

    ``networked``: the container whose addresses these are (itself, or the owner of a shared network);
    ``labels``: the container's labels (``--use-ip-from-label``). A port of no service: None, after
    ``warn`` and ``skip`` said why."""
    known: dict[str, tuple[str, str]] = {}  # lan_ipv4 / lan_ipv6 -> (address, port)
    if settings.internal:
        network = meta.get("network")
        if network is not None and network.value not in network_names(networked):
            on = ", ".join(network_names(networked)) or "none"
            warn(network, f"the container is not on network {network.value!r} (on: {on}); not registered")
            skip(port, f"not on network {network.value!r} ({network.source}); it is on: {on}")
            return "", None, ()
        v4, v6 = _container_ips(networked, network.value if network else settings.network)
        known = {k: (a, port.port) for k, a in (("lan_ipv4", v4), ("lan_ipv6", v6)) if a}
        fallback = ("", port.port)
    else:
        for ip, number in ((port.host_ip, port.host_port), (port.v6_ip, port.v6_port)):
            if number:
                family = "lan_ipv6" if ":" in ip else "lan_ipv4"
                given = settings.ip if (":" in settings.ip) == (family == "lan_ipv6") else ""
                known.setdefault(family, (given or ("" if ip in UNBOUND else ip), number))
        fallback = (settings.ip, port.host_port)
    order = ("lan_ipv6", "lan_ipv4") if settings.ipv6 else ("lan_ipv4", "lan_ipv6")
    address, number = next((known[f] for f in order if f in known and known[f][0]), fallback)
    if settings.ip and not settings.internal:
        # --ip names the address to register, as registrator's -ip did, with its family's host port.
        family = "lan_ipv6" if ":" in settings.ip else "lan_ipv4"
        address, number = settings.ip, known.get(family, (address, number))[1]
    label = settings.use_ip_from_label
    from_label = (labels.get(label) or "").strip() if label else ""
    if from_label:
        parsed = ip_address_of(from_label)
        if parsed is None:
            warn(f"label {label}", f"{from_label!r} is not an IP address; the label is ignored")
        else:  # registered, tagged under its family, and in the checks, as --ip is
            address = parsed
            known["lan_ipv6" if ":" in parsed else "lan_ipv4"] = (parsed, number)
    if not number.isdigit() or not 0 < int(number) < 65536:
        warn(f"port {port.port}/{port.proto}", f"{number!r} is not a port number")
        skip(port, "its host port is not a port number")
        return address, None, ()
    wan = settings.wan_ip
    if wan:  # --wan-ip: Consul's wan addresses, with the registered port (NAT, public addresses)
        known["wan"] = known["wan_ipv6" if ":" in wan else "wan_ipv4"] = (wan, number)
    tagged = tuple(
        (family, a, int(n)) for family, (a, n) in sorted(known.items()) if a and n.isdigit() and 0 < int(n) < 65536
    )
    return address, int(number), tagged
