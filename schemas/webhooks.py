"""Webhook URL checks: https only, and no private or metadata addresses unless allow-listed."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = ["METADATA_ADDRESSES", "host_allowed", "webhook_url_problem"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
"""Cloud instance-metadata endpoints (AWS, GCP, Azure, ...), never a webhook target."""

# Digits, hex and dots only: forms such as "2130706433" or "0x7f.1" that a resolver reads as
# IPv4 addresses even though `ipaddress` does not.
_LEGACY_IPV4 = re.compile(r"^[0-9a-fx.]+$")


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _why_forbidden(addr: IPAddress) -> str | None:
    """Name the kind of address that a webhook must not reach, or None when it is public."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr in METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        ("is_unspecified", "an unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
    )
    for attribute, words in checks:
        if getattr(addr, attribute):
            return words
    if not addr.is_global:  # e.g. 100.64.0.0/10, shared carrier-grade NAT space
        return "a non-public address"
    return None


def host_allowed(host: str, port: int | None, allowlist: Sequence[str]) -> bool:
    """Whether `host` is named by the allow-list: as a host name, an address or a network."""
    host = host.lower().rstrip(".")
    addr = _literal_address(host)
    for entry in allowlist:
        entry = entry.strip().lower().rstrip(".")
        if not entry:
            continue
        if entry == host or (port is not None and entry == f"{host}:{port}"):
            return True
        if addr is not None and "/" in entry:
            try:
                if addr in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def webhook_url_problem(
    url: str, *, allowlist: Sequence[str] = (), resolve: bool = True
) -> str | None:
    """Return why `url` may not receive webhooks, or None when it may.

    A host named by `allowlist` may use http and any address. Otherwise the URL must be https
    and its host must not be, or (with `resolve`) resolve to, a loopback, private, link-local,
    reserved, multicast, unspecified or metadata address. Whoever delivers should call this
    again just before sending: a name may resolve differently by then.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in ("http", "https") or not host:
        return "must be an absolute https URL, e.g. https://example.com/hook"
    if host_allowed(host, port, allowlist):
        return None
    if scheme != "https":
        return (
            f"must use https: http is allowed only to hosts in the farm's webhook allow-list, "
            f"which does not name {host!r}"
        )
    refusal = " unless the farm's webhook allow-list names it"
    addr = _literal_address(host)
    if addr is not None:
        why = _why_forbidden(addr)
        return f"host {host!r} is {why}: refused{refusal}" if why else None
    if host == "localhost" or host.endswith(".localhost"):
        return f"host {host!r} is a loopback name: refused{refusal}"
    if not resolve:
        return None
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return f"host {host!r} does not resolve"
    for info in infos:
        resolved = _literal_address(str(info[4][0]).split("%", 1)[0])
        why = _why_forbidden(resolved) if resolved is not None else "not an IP address"
        if why:
            return f"host {host!r} resolves to {info[4][0]}, {why}: refused{refusal}"
    return None
