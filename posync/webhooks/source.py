"""Which network addresses may send webhooks (the seed's "IP whitelist"), proxy-aware.

``X-Forwarded-For`` is trusted only when the direct peer is a configured trusted proxy, and then only as far
as the chain of trusted proxies goes: the client is the right-most hop that is not a trusted proxy. A
client can write anything in the left part of the header, so the left-most hop is never believed blindly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from posync.errors import ConfigurationError, ForbiddenSourceError

__all__ = ["IPAddress", "SourcePolicy", "parse_ip"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_FORWARDED_FOR = 4096


def parse_ip(text: str) -> IPAddress | None:
    """An address as peers and proxies write it (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``)."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _networks(items: Iterable[str], what: str) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items)
    except ValueError as exc:
        raise ConfigurationError(f"{what}: not an IP address or CIDR network ({exc})") from exc


class SourcePolicy:
    """Allow webhooks only from ``allow`` (addresses or CIDRs), seeing through ``trusted_proxies``."""

    def __init__(self, allow: Iterable[str], *, trusted_proxies: Iterable[str] = ()) -> None:
        self._allow = _networks(allow, "allowed webhook sources")
        self._proxies = _networks(trusted_proxies, "trusted proxies")
        if not self._allow:
            raise ConfigurationError("SourcePolicy needs at least one allowed address or network")

    @staticmethod
    def _within(ip: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
        return any(ip in net for net in networks)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> IPAddress | None:
        """The address to judge, or None when it cannot be known (no peer, or a garbled trusted header)."""
        peer_ip = parse_ip(peer) if peer else None
        if peer_ip is None or not self._proxies or not self._within(peer_ip, self._proxies):
            return peer_ip
        if not forwarded_for:
            return peer_ip
        if len(forwarded_for) > MAX_FORWARDED_FOR:
            return None
        hops = [hop for hop in forwarded_for.split(",") if hop.strip()]
        client = peer_ip
        for hop in reversed(hops):
            hop_ip = parse_ip(hop)
            if hop_ip is None:
                return None
            client = hop_ip
            if not self._within(hop_ip, self._proxies):
                break
        return client

    def check(self, peer: str | None, forwarded_for: str | None) -> None:
        ip = self.client_ip(peer, forwarded_for)
        if ip is None or not self._within(ip, self._allow):
            raise ForbiddenSourceError(f"webhook source {ip or 'unknown'} is not allowed")

    def __repr__(self) -> str:
        return (f"SourcePolicy(allow={[str(n) for n in self._allow]}, "
                f"trusted_proxies={[str(n) for n in self._proxies]})")
