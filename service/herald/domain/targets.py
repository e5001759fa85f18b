"""Which outbound addresses a definition may reach (issue 11, point 8). Pure rules; the
resolving, connecting half is herald.adapters.net_guard.

Never: link-local (169.254.0.0/16, fe80::/10; cloud metadata lives there), the metadata
names, unspecified, multicast, reserved and broadcast addresses. Private (RFC 1918, ULA,
CGNAT) and loopback only when HERALD_ALLOW_PRIVATE_TARGETS allows them.
https://cheatsheetseries.owasp.org/cheatsheets/Server_Side_Request_Forgery_Prevention_Cheat_Sheet.html
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

METADATA_NAMES = frozenset({"metadata.google.internal", "metadata", "metadata.goog", "instance-data"})
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def address_problem(address: str, allow_private: bool) -> str | None:
    """Why ``address`` (an IP literal) may not be reached, or None."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    if ip.is_link_local:
        return f"{ip} is link-local"
    # Loopback before "reserved": ipaddress counts ::1 as reserved, and it is loopback.
    if not ip.is_loopback and (ip.is_unspecified or ip.is_multicast or ip.is_reserved or str(ip) == "255.255.255.255"):
        return f"{ip} is not a routable address"
    if ip.is_loopback or ip.is_private or ip in _CGNAT:
        if allow_private:
            return None
        return f"{ip} is a private or loopback address (HERALD_ALLOW_PRIVATE_TARGETS allows it)"
    return None


def host_problem(host: str, allow_private: bool) -> str | None:
    """Why a URL's host may not be reached, judged without DNS (literals and known names)."""
    host = host.lower().rstrip(".")
    if not host:
        return "the URL has no host"
    if host in METADATA_NAMES or host.endswith(".metadata.google.internal"):
        return f"{host} is a cloud metadata service"
    if host == "localhost" or host.endswith(".localhost"):
        return None if allow_private else f"{host} is loopback (HERALD_ALLOW_PRIVATE_TARGETS allows it)"
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None  # a name: judged again on the address it resolves to when connecting
    return address_problem(host, allow_private)


def url_problem(url: str, allow_private: bool = True, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """Why ``url`` may not be reached, or None. ``allow_private`` defaults to True here
    because definitions are validated without settings; the connect-time check applies it."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 (raises on a malformed port)
    except ValueError:
        return "not a valid URL"
    if parts.scheme.lower() not in schemes:
        return f"scheme must be {' or '.join(schemes)}"
    return host_problem(host, allow_private)
