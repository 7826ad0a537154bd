"""The ``Host`` policy (``agent.core.serving.hosts``) and the endpoint's list of proxy headers, as tables.
(Against the real endpoint: test_hosts.py; against the probes: tests/observe/test_probe_limits.py.)"""

from __future__ import annotations

import pytest

from agent.core.serving.hosts import HostPolicy, parse_host
from agent.endpoint.limits import PROXY_HEADERS


def test_every_listed_proxy_header_is_spelled_as_it_is_matched() -> None:
    assert all(name == name.lower() for name in PROXY_HEADERS)
    assert {"x-real-ip", "via", "forwarded", "true-client-ip", "cf-connecting-ip"} <= set(PROXY_HEADERS)


# -- the Host policy, as a table ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        ("127.0.0.1:8730", ("loopback", "127.0.0.1")),
        ("127.3.4.5", ("loopback", "127.3.4.5")),
        ("[::1]:1", ("loopback", "::1")),
        ("[0:0:0:0:0:0:0:1]", ("loopback", "::1")),
        ("LOCALHOST.", ("loopback", "localhost")),
        ("10.1.2.3:8731", ("ip", "10.1.2.3")),
        ("[fd00::1]:8731", ("ip", "fd00::1")),
        ("Example.COM.:80", ("name", "example.com")),
        ("127.1", ("name", "127.1")),  # not an address Python (or a browser's URL bar) writes: a name
        ("[example.com]", ("invalid", "")),
        ("a:b:c", ("invalid", "")),
        ("host:port", ("invalid", "")),
        ("", ("invalid", "")),
    ],
)
def test_host_headers_are_parsed_into_kind_and_name(header: str, parsed: tuple[str, str]) -> None:
    assert parse_host(header) == parsed


def test_the_probes_policy_takes_any_address_and_only_configured_names() -> None:
    policy = HostPolicy.of(["prometheus-target.svc"], addresses="any", missing=True)
    assert policy.allows("10.1.2.3:8731")
    assert policy.allows("[fd00::1]:8731")
    assert policy.allows("localhost:8731")
    assert policy.allows("Prometheus-Target.svc:8731")
    assert policy.allows(None)
    assert not policy.allows("rebind.attacker.example:8731")
    assert not policy.allows("garbage:")


def test_a_malformed_configured_name_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="not a host name or address: 'a:b:c'"):
        HostPolicy.of(["a:b:c"], addresses="loopback", missing=False)
