"""Webhook targets: https to public hosts, or what the farm's allow-list names."""

from __future__ import annotations

import socket

import pytest

from schemas import webhook_url_problem


@pytest.fixture
def no_dns(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no DNS lookups in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def resolving_to(monkeypatch, *addresses: str) -> list[str]:
    asked: list[str] = []

    def fake(host, port, *args, **kwargs):
        asked.append(host)
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return asked


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("https://127.8.9.10/hook", "loopback"),
        ("https://10.0.0.1/hook", "private"),
        ("https://192.168.0.5/hook", "private"),
        ("https://172.16.3.4/hook", "private"),
        ("https://169.254.169.254/latest", "metadata"),
        ("https://169.254.1.1/", "link-local"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://224.0.0.1/", "multicast"),
        ("https://100.64.0.1/", "non-public"),
        ("https://[::1]/hook", "loopback"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://[fd00:ec2::254]/", "metadata"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("https://2130706433/hook", "loopback"),
        ("https://0x7f.1/hook", "loopback"),
        ("https://localhost/hook", "loopback"),
        ("https://api.localhost/hook", "loopback"),
    ],
)
def test_non_public_addresses_are_refused(no_dns, url, words):
    problem = webhook_url_problem(url, allowlist=[], resolve=True)
    assert problem is not None and words in problem


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://example.com/hook", "must use https"),
        ("ftp://example.com/", "absolute https URL"),
        ("example.com/hook", "absolute https URL"),
        ("https:///nohost", "absolute https URL"),
        ("https://example.com:99999/", "not a valid URL"),
    ],
)
def test_plain_http_and_malformed_urls_are_refused(no_dns, url, words):
    problem = webhook_url_problem(url, resolve=False)
    assert problem is not None and words in problem


def test_public_https_url_is_allowed_without_resolving(no_dns):
    assert webhook_url_problem("https://example.com/hook", resolve=False) is None
    assert webhook_url_problem("https://93.184.215.14/hook", resolve=True) is None


def test_allowlist_names_hosts_addresses_and_networks(no_dns):
    assert webhook_url_problem("http://example.com/h", allowlist=["EXAMPLE.com"]) is None
    assert webhook_url_problem("http://127.0.0.1:8080/h", allowlist=["127.0.0.1"]) is None
    assert webhook_url_problem("http://hooks:8080/h", allowlist=["hooks:8080"]) is None
    assert webhook_url_problem("https://10.1.2.3/h", allowlist=["10.0.0.0/8"]) is None
    assert webhook_url_problem("https://10.1.2.3/h", allowlist=["192.168.0.0/16"]) is not None
    assert webhook_url_problem("http://other.com/h", allowlist=["example.com"]) is not None


def test_allowlisted_host_is_not_resolved(no_dns):
    assert webhook_url_problem("https://hooks.internal/h", allowlist=["hooks.internal"]) is None


def test_host_resolving_to_a_private_address_is_refused(monkeypatch):
    asked = resolving_to(monkeypatch, "93.184.215.14", "10.0.0.7")
    problem = webhook_url_problem("https://sneaky.example/h")
    assert asked == ["sneaky.example"]
    assert problem is not None and "10.0.0.7" in problem and "private" in problem


def test_host_resolving_to_the_metadata_address_is_refused(monkeypatch):
    resolving_to(monkeypatch, "169.254.169.254")
    problem = webhook_url_problem("https://rebind.example/h")
    assert problem is not None and "metadata" in problem


def test_host_resolving_to_public_addresses_is_allowed(monkeypatch):
    resolving_to(monkeypatch, "93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    assert webhook_url_problem("https://example.com/h") is None


def test_host_that_does_not_resolve_is_refused(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    assert "does not resolve" in (webhook_url_problem("https://nowhere.invalid/") or "")
