"""Which address per-client limits count: the peer, or what a trusted proxy says."""

from __future__ import annotations

import re

import pytest
from aiohttp.test_utils import make_mocked_request

from proxy.web.client_address import ClientAddress, parse_networks


class _Transport:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default=None):
        return (self.peer, 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


def request(peer: str, *forwarded: str):
    headers = [("X-Forwarded-For", value) for value in forwarded]
    return make_mocked_request("GET", "/", headers=headers, transport=_Transport(peer))


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert ClientAddress().of(request("192.0.2.1", "198.51.100.7")) == "192.0.2.1"


def test_an_untrusted_peer_cannot_speak_for_a_client() -> None:
    finder = ClientAddress(parse_networks("10.0.0.0/8"))
    assert finder.of(request("192.0.2.1", "198.51.100.7")) == "192.0.2.1"


def test_the_rightmost_address_no_trusted_proxy_added_is_the_client() -> None:
    finder = ClientAddress(parse_networks("10.0.0.0/8, 127.0.0.1"))
    # the client forged the first entry; 10.1.2.3 is a second trusted hop
    got = finder.of(request("127.0.0.1", "6.6.6.6, 203.0.113.9", "10.1.2.3"))
    assert got == "203.0.113.9"


def test_only_trusted_hops_means_the_first_one() -> None:
    finder = ClientAddress(parse_networks("10.0.0.0/8"))
    assert finder.of(request("10.0.0.1", "10.0.0.2, 10.0.0.3")) == "10.0.0.2"


def test_garbage_in_the_header_falls_back_to_the_peer() -> None:
    finder = ClientAddress(parse_networks("10.0.0.0/8"))
    assert finder.of(request("10.0.0.1", "not-an-address")) == "10.0.0.1"
    assert finder.of(request("10.0.0.1")) == "10.0.0.1"


def test_ipv6_networks() -> None:
    finder = ClientAddress(parse_networks("::1, fd00::/8"))
    assert finder.of(request("::1", "2001:db8::5, fd00::1")) == "2001:db8::5"


def test_a_bad_entry_is_named() -> None:
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33'")):
        parse_networks("10.0.0.1, 10.0.0.0/33")
    assert parse_networks(" , ") == ()
