"""Who is the client, for per-client limits: the peer address, or, when the peer is a trusted
reverse proxy, the address it reports in `X-Forwarded-For`.

Behind nginx or a load balancer every request arrives from the same peer, so per-client limits
(uncached permission checks, forwarded requests) would throttle every user together. Only peers
listed in `trusted_proxies` may speak for a client: anyone else could put any address in the
header and escape the limits.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str | None) -> tuple[Network, ...]:
    """`10.0.0.1, 10.1.0.0/16, ::1` → networks; raises ValueError naming a bad entry."""
    networks: list[Network] = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not an address or network: {item!r}") from None
    return tuple(networks)


class ClientAddress:
    """`of(request)`: the address per-client limits count against."""

    def __init__(self, trusted: Iterable[Network] = ()) -> None:
        self.trusted = tuple(trusted)

    def of(self, request: web.BaseRequest) -> str | None:
        peer = request.remote
        if not self.trusted or not self._is_trusted(peer):
            return peer
        # The rightmost address no trusted proxy added is the client; proxies append.
        hops = [
            hop.strip()
            for value in request.headers.getall("X-Forwarded-For", ())
            for hop in value.split(",")
            if hop.strip()
        ]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop if _is_address(hop) else peer
        return hops[0] if hops and _is_address(hops[0]) else peer

    def _is_trusted(self, address: str | None) -> bool:
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


CLIENT_ADDRESS = web.AppKey("client_address", ClientAddress)


def client_of(request: web.BaseRequest) -> str | None:
    """The client address of `request` as the app's `ClientAddress` sees it."""
    finder = request.app.get(CLIENT_ADDRESS) if isinstance(request, web.Request) else None
    return finder.of(request) if finder is not None else request.remote
