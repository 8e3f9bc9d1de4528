"""Which hosts a caller-supplied URL may make the server contact (the SSRF allow-lists).
Pure.

Several inputs make the server send requests to a host a caller names: https://
InputLocations, http(s):// model container Images, http(s):// notification webhooks.
Each has an operator allow-list (``https_input_allow_hosts``, ``container_allow_hosts``,
``notification_allow_hosts``) and the same rule decides for all of them: the host must
be listed (``*`` lists every host). Where a list grants it, a loopback host is allowed
without listing when the server itself listens on loopback: then nothing but this
machine reaches the server anyway.
"""

from __future__ import annotations

import ipaddress

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(host: str, allow_hosts: list[str], server_host: str | None = None) -> bool:
    """Whether ``host`` is on ``allow_hosts`` (case-insensitive; ``*`` allows all). With
    ``server_host`` given, a loopback host is also allowed when the server listens on a
    loopback address."""
    host = host.strip("[]").lower()
    allowed = {h.strip().lower().strip("[]") for h in allow_hosts}
    if "*" in allowed or host in allowed:
        return True
    return server_host is not None and is_loopback(host) and is_loopback(server_host)


def refusal(host: str, setting: str, server_host: str | None = None) -> str:
    """Why ``host`` was refused, naming the setting that would allow it."""
    text = f"host {host} is not in the allow-list ({setting})"
    if server_host is not None and is_loopback(host):
        text += "; loopback hosts are allowed by default only when the server listens on loopback"
    return text
