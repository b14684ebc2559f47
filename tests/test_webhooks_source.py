"""The IP allowlist, and when X-Forwarded-For may be believed."""

from __future__ import annotations

import ipaddress

import pytest

from posync.errors import ConfigurationError, ForbiddenSourceError
from posync.webhooks import SourcePolicy
from posync.webhooks.source import parse_ip

HO = "203.0.113.0/24"
PROXIES = ["10.0.0.0/8", "::1"]


def test_direct_peer_is_judged_and_forwarded_for_ignored_without_trusted_proxy() -> None:
    policy = SourcePolicy([HO])
    policy.check("203.0.113.7", None)
    with pytest.raises(ForbiddenSourceError) as caught:
        policy.check("198.51.100.1", "203.0.113.7")  # a client cannot claim HO's address
    assert caught.value.status == 403


def test_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    policy = SourcePolicy([HO], trusted_proxies=PROXIES)
    policy.check("10.1.2.3", "203.0.113.7")
    policy.check("::1", "203.0.113.7")
    with pytest.raises(ForbiddenSourceError):
        policy.check("198.51.100.1", "203.0.113.7")


def test_right_most_untrusted_hop_is_the_client() -> None:
    policy = SourcePolicy([HO], trusted_proxies=PROXIES)
    # attacker prepends HO's address; the real client (198.51.100.9) is right of it
    with pytest.raises(ForbiddenSourceError):
        policy.check("10.0.0.1", "203.0.113.7, 198.51.100.9")
    # HO behind two of our proxies
    policy.check("10.0.0.1", "198.51.100.9, 203.0.113.7, 10.0.0.2")
    assert policy.client_ip("10.0.0.1", "10.0.0.3, 10.0.0.2") == ipaddress.ip_address("10.0.0.3")
    assert policy.client_ip("10.0.0.1", "") == ipaddress.ip_address("10.0.0.1")


@pytest.mark.parametrize("xff", ["unknown", "203.0.113.7, garbage", "x" * 5000])
def test_garbled_forwarded_for_from_a_proxy_is_forbidden(xff: str) -> None:
    with pytest.raises(ForbiddenSourceError):
        SourcePolicy([HO], trusted_proxies=PROXIES).check("10.0.0.1", xff)


def test_no_peer_is_forbidden_and_ipv4_mapped_ipv6_is_normalised() -> None:
    policy = SourcePolicy([HO, "2001:db8::/32"])
    with pytest.raises(ForbiddenSourceError):
        policy.check(None, None)
    policy.check("::ffff:203.0.113.5", None)
    policy.check("2001:db8::1", None)
    assert parse_ip("[2001:db8::1]:443") == ipaddress.ip_address("2001:db8::1")
    assert parse_ip("203.0.113.5:8080") == ipaddress.ip_address("203.0.113.5")
    assert parse_ip("nonsense") is None


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        SourcePolicy([])
    with pytest.raises(ConfigurationError):
        SourcePolicy(["300.1.1.1"])
    with pytest.raises(ConfigurationError):
        SourcePolicy([HO], trusted_proxies=["nope"])
