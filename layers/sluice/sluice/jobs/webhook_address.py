"""Which addresses a webhook may be sent to: public unicast only, judged on every address a name has.

IPv6 forms that carry an IPv4 address (IPv4-mapped and -compatible, NAT64, 6to4, Teredo) are judged by
the address they carry as well, since a gateway or the host's own stack would deliver to it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")
# Cloud metadata services, named so a refusal in the logs says what was aimed at.
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class WebhookHostUnresolvable(Exception):
    """The webhook's host has no address this time (DNS may recover)."""


@dataclass(frozen=True)
class Target:
    """One checked address to connect to: exactly what was judged, so nothing resolves again."""

    family: int
    address: str
    port: int


def embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for, through the transition mechanisms."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _V4_COMPATIBLE and int(ip) > 1:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip in _NAT64[0]:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    elif ip in _NAT64[1]:
        # RFC 6052 /48: the IPv4 address sits in bits 48-63 and 72-95 (bits 64-71 are zero).
        value = int(ip)
        found.append(ipaddress.IPv4Address((((value >> 64) & 0xFFFF) << 16) | ((value >> 32) & 0xFFFF)))
    return found


def why_not_public(ip: IPAddress) -> str | None:
    """None for a public unicast address; otherwise what it is (for the logs, never for the caller)."""
    if ip in _METADATA:
        return "a cloud metadata service"
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv4-mapped and DNS64/NAT64 (/96) addresses reach exactly their IPv4 address: judged as it.
        translated = ip.ipv4_mapped or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64[0] else None)
        if translated is not None:
            inner = why_not_public(translated)
            return f"an IPv6 form of {translated} ({inner})" if inner else None
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip in _SITE_LOCAL),
        ("private or special-purpose", ip.is_private or not ip.is_global),
    )
    for what, hit in checks:
        if hit:
            return what
    for inner in embedded_ipv4(ip):
        reason = why_not_public(inner)
        if reason:
            return f"an IPv6 form of {inner} ({reason})"
    if isinstance(ip, ipaddress.IPv6Address) and (ip.teredo is not None or ip in _NAT64[1]):
        return "a tunnelling or translation prefix"
    return None


def resolve_targets(
    host: str, port: int, *, allow_private: bool, resolver: Callable[..., list[Any]] | None = None
) -> tuple[list[Target], list[tuple[str, str]]]:
    """Resolves once. Returns the addresses to try and, when any is not public, the refused ones
    with why (one refused address refuses the host: a name that also points inside is not trusted)."""
    lookup = resolver or socket.getaddrinfo
    try:
        answers = lookup(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError, ValueError) as exc:
        raise WebhookHostUnresolvable(f"{host!r}: {exc}") from exc
    targets: list[Target] = []
    refused: list[tuple[str, str]] = []
    for family, _type, _proto, _name, sockaddr in answers:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = str(sockaddr[0]).split("%", 1)[0]
        ip = ipaddress.ip_address(address)
        reason = None if allow_private else why_not_public(ip)
        if reason:
            refused.append((address, reason))
        target = Target(family=family, address=address, port=int(sockaddr[1]))
        if target not in targets:
            targets.append(target)
    if not targets:
        raise WebhookHostUnresolvable(f"{host!r} has no IPv4 or IPv6 address")
    return targets, refused
