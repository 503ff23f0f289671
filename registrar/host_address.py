"""The host's address for ``--ip`` and ``--wan-ip``: an IP address as given, an interface's, or the one in a range.

``--ip 10.0.0.5`` is an address (a prefix length with host bits, ``10.0.0.5/24``, is dropped, as for
registrator's ``-ip``); ``--ip eth1`` is that interface's first IPv4 address (its first global IPv6
one with ``--ipv6``, where it has one); ``--ip 10.20.0.0/16`` (no host bits) is the host's address
in that range. Interfaces and ranges are resolved against the host's interfaces (psutil's
``net_if_addrs``, imported only then) at start and again on every full reconcile, since interfaces
change (DHCP, a VPN coming up).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: A Linux interface name: at most 15 characters, none of them ``/``, ``:`` or whitespace.
INTERFACE_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")


class BadAddress(ValueError):
    """The text is neither an IP address, nor an interface name, nor a range."""


@dataclass(frozen=True)
class AddressSpec:
    """What ``--ip`` or ``--wan-ip`` names."""

    text: str
    """As given, for messages."""
    address: str = ""
    """An IP address given as such (canonical form); "" for an interface or a range."""
    interface: str = ""
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    @property
    def dynamic(self) -> bool:
        """An interface or a range: resolved against the host's interfaces, again on every full reconcile."""
        return not self.address


def parse_spec(text: str) -> AddressSpec:
    """Read ``--ip``/``--wan-ip``'s value; raises BadAddress when it is none of the three forms."""
    text = text.strip()
    try:
        if "/" in text:
            network = ipaddress.ip_network(text, strict=False)
            interface = ipaddress.ip_interface(text)
            if interface.ip == network.network_address and network.num_addresses > 1:
                return AddressSpec(text, network=network)
            return AddressSpec(text, address=str(interface.ip))
        return AddressSpec(text, address=str(ipaddress.ip_address(text)))
    except ValueError:
        pass
    if INTERFACE_NAME.match(text) and not re.fullmatch(r"[0-9.]+", text):
        return AddressSpec(text, interface=text)
    raise BadAddress(f"{text!r} is not an IP address, an interface name or a range (CIDR)")


def host_interfaces() -> dict[str, list[str]]:
    """The host's interfaces and their addresses, in the kernel's order (IPv6 zone suffixes dropped)."""
    import socket

    import psutil

    families = (socket.AF_INET, socket.AF_INET6)
    return {
        name: [a.address.split("%", 1)[0] for a in addresses if a.family in families]
        for name, addresses in psutil.net_if_addrs().items()
    }


def resolve(spec: AddressSpec, ipv6: bool, interfaces: Mapping[str, Sequence[str]] | None = None) -> str:
    """The address ``spec`` names now; raises BadAddress (one line, naming what was looked for) when none.

    ``interfaces``: name -> addresses (``host_interfaces()`` when None). An interface gives its first
    IPv4 address, or with ``ipv6`` its first global IPv6 one where it has one (link-local addresses
    need a zone and are skipped); a range gives the first address of any interface within it.
    """
    if not spec.dynamic:
        return spec.address
    found = host_interfaces() if interfaces is None else interfaces
    if spec.interface:
        if spec.interface not in found:
            names = ", ".join(sorted(found)) or "none"
            raise BadAddress(f"{spec.text}: no interface of that name on this host (it has: {names})")
        ips = [ipaddress.ip_address(a) for a in found[spec.interface] if _is_ip(a)]
        v4 = [ip for ip in ips if ip.version == 4]
        v6 = [ip for ip in ips if ip.version == 6 and not ip.is_link_local]
        for ip in (v6 + v4) if ipv6 else (v4 + v6):
            return str(ip)
        raise BadAddress(f"{spec.text}: the interface has no usable IP address")
    assert spec.network is not None
    for addresses in found.values():
        for text in addresses:
            if _is_ip(text) and ipaddress.ip_address(text) in spec.network:
                return str(ipaddress.ip_address(text))
    raise BadAddress(f"{spec.text}: no address of this host is in that range")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
