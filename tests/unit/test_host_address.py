"""--ip and --wan-ip: an IP address, an interface's address, or the host's address in a range."""

from __future__ import annotations

import pytest

from registrar.host_address import BadAddress, parse_spec, resolve

INTERFACES = {
    "lo": ["127.0.0.1", "::1"],
    "eth0": ["10.0.2.15", "fe80::a00:27ff:fe4e:66a1", "2001:db8:1::15"],
    "eth1": ["192.168.56.10"],
    "wg0": ["fe80::1"],
}


@pytest.mark.parametrize(
    ("text", "ipv6", "address"),
    [
        ("10.1.2.3", False, "10.1.2.3"),
        ("10.42.7.9/16", False, "10.42.7.9"),  # host bits set: an address with Rancher's prefix, dropped
        ("2001:DB8::0001", False, "2001:db8::1"),
        ("eth1", False, "192.168.56.10"),
        ("eth0", False, "10.0.2.15"),
        ("eth0", True, "2001:db8:1::15"),  # global IPv6 first with --ipv6; link-local skipped
        ("eth1", True, "192.168.56.10"),  # no IPv6 there: its IPv4
        ("192.168.0.0/16", False, "192.168.56.10"),
        ("2001:db8::/32", False, "2001:db8:1::15"),
    ],
)
def test_each_form_resolves_to_one_address(text: str, ipv6: bool, address: str) -> None:
    """An IP as given (canonical, prefix dropped), an interface's first address, the address within a range."""
    assert resolve(parse_spec(text), ipv6, INTERFACES) == address


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("eth9", "eth9: no interface of that name on this host (it has: eth0, eth1, lo, wg0)"),
        ("wg0", "wg0: the interface has no usable IP address"),
        ("172.16.0.0/12", "172.16.0.0/12: no address of this host is in that range"),
    ],
)
def test_a_name_or_range_that_matches_nothing_says_what_was_looked_for(text: str, message: str) -> None:
    """No such interface, an interface without a usable address, a range with no address of the host: one line."""
    with pytest.raises(BadAddress, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        resolve(parse_spec(text), False, INTERFACES)


@pytest.mark.parametrize("text", ["a b", "10.0.0.300", "", "eth0/eth1", "averyveryverylongname"])
def test_anything_else_is_refused_when_read(text: str) -> None:
    """Not an address, an interface name (15 characters, no / or spaces) or a range: refused as it is read."""
    with pytest.raises(BadAddress, match="is not an IP address, an interface name or a range"):
        parse_spec(text)


def test_the_hosts_own_loopback_interface_is_found() -> None:
    """On this machine (psutil's interface list): lo is 127.0.0.1, and 127.0.0.0/8 finds it too."""
    assert resolve(parse_spec("lo"), False) == "127.0.0.1"
    assert resolve(parse_spec("127.0.0.0/8"), False) == "127.0.0.1"
