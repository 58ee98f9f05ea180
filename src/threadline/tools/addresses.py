"""Which IP addresses the server may connect to on a user's behalf: public ones only.

`refusal(address)` names the kind of non-public address it is ("a loopback address"), or
None for a public one. IPv6 forms that embed an IPv4 address (mapped `::ffff:a.b.c.d`,
compatible `::a.b.c.d`, 6to4, Teredo, NAT64) are judged by the IPv4 address inside too, so
`::ffff:127.0.0.1` is loopback, whatever this Python's `ipaddress` thinks of it.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

SHARED = IPv4Network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
NAT64 = IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix: the last 32 bits are IPv4
LOCAL_NAT64 = IPv6Network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215)
COMPATIBLE = IPv6Network("::/96")  # deprecated IPv4-compatible addresses (and :: and ::1)


def refusal(address: str) -> str | None:
    """Why the server must not connect to `address`; None when it is a public address."""
    try:
        ip = ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, IPv6Address):
        for inner in _embedded(ip):
            reason = _kind(inner)
            if reason:
                return reason
        if ip in LOCAL_NAT64:
            return "a private address"
    return _kind(ip)


def _kind(ip: IPv4Address | IPv6Address) -> str | None:
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, IPv4Address) and ip in SHARED:
        return "a shared (carrier-grade NAT) address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def _embedded(ip: IPv6Address) -> list[IPv4Address]:
    inner: list[IPv4Address] = []
    if ip.ipv4_mapped is not None:
        inner.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        inner.append(ip.sixtofour)
    if ip.teredo is not None:
        inner.extend(ip.teredo)
    if ip in NAT64 or (ip in COMPATIBLE and int(ip) > 1):
        inner.append(IPv4Address(int(ip) & 0xFFFFFFFF))
    return inner
