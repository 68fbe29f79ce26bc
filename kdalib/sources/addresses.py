"""Which IP addresses the HTTP client may contact: public ones only, judged by what they reach.

An address is refused when it is not a global address by the :mod:`ipaddress` module's own
registry (``is_global``: loopback, private, link-local, shared, reserved, documentation and
benchmark ranges all fail it), when it is multicast or IPv6 site-local (``fec0::/10``,
deprecated but still routed inside some networks), and when it **wraps** an IPv4 address that
is refused: IPv4-mapped (``::ffff:a.b.c.d``), IPv4-compatible (``::a.b.c.d``), 6to4
(``2002:AABB:CCDD::``), NAT64 (``64:ff9b::a.b.c.d``) and both ends of a Teredo address. Only the
properties of the address decide; there is no list of ranges to keep up to date.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator

Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: What ``allow_loopback`` (tests only) lets through.
LOOPBACK_ALLOWED = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


def address_problem(address: str, allow_loopback: bool) -> str | None:
    """Why ``address`` must not be contacted, or None when it is a public address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"{address!r:.80}, which is not a plain IP address"
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    if allow_loopback and (mapped or ip) in LOOPBACK_ALLOWED:
        return None
    for form, inner in _wrapped(ip):
        problem = _not_public(inner)
        if problem:
            return f"{ip}, which wraps {inner} ({form}): {problem}"
    return _not_public(ip)


def _wrapped(ip: IPAddress) -> Iterator[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, with the name of the form."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return
    if ip.ipv4_mapped is not None:
        yield "IPv4-mapped", ip.ipv4_mapped
    if ip.sixtofour is not None:
        yield "6to4", ip.sixtofour
    if ip.teredo is not None:
        server, client = ip.teredo
        yield "Teredo server", server
        yield "Teredo client", client
    low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64:
        yield "NAT64", low
    elif ip in _COMPATIBLE and int(ip) > 1:
        yield "IPv4-compatible", low


def _not_public(ip: IPAddress) -> str | None:
    """The first property that makes ``ip`` non-public (most specific first), or None."""
    for label, flag in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("unspecified", ip.is_unspecified),
        ("multicast", ip.is_multicast),
        ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
    ):
        if flag:
            return f"{label} address {ip}"
    return None if ip.is_global else f"{ip} is not a global address"
