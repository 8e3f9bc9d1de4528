"""Which ``http(s)://`` container URLs a model may name (CreateModel's Image). Pure.

An Image URL makes the server send requests (``GET /ping``, ``POST /invocations``) to
the host it names, so it is held to the rules that keep it from being a way into
other services: only ``scheme://host[:port]`` (a path, query, fragment or credentials
are refused, never silently used), and the host must be on the operator's allow-list
(``container_allow_hosts``). Loopback hosts are allowed without listing them only when
the server itself listens on loopback: then nothing but this machine reaches it anyway
(the rule every outbound allow-list shares: ``sagequeue.domain.outbound``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sagequeue.domain.outbound import host_allowed, is_loopback

CONTAINER_SCHEMES = ("http://", "https://")


class ContainerUrlError(ValueError):
    """An Image URL that may not be used; the message says why."""


def is_container_image(image: str) -> bool:
    return image.startswith(CONTAINER_SCHEMES)


def container_base_url(image: str) -> str:
    """``scheme://host[:port]`` of an Image URL; raises ContainerUrlError for a URL
    with anything more (or less)."""
    try:
        parts = urlsplit(image)
        port = parts.port
    except ValueError as exc:
        raise ContainerUrlError(f"Image {image} is not a valid URL: {exc}.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ContainerUrlError(f"Image {image} must be http(s)://host[:port].")
    if parts.username is not None or parts.password is not None:
        raise ContainerUrlError(f"Image {image} must not carry credentials.")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in image:
        raise ContainerUrlError(
            f"Image {image} must be http(s)://host[:port] without a path or query: the "
            "container contract's paths (/ping, /invocations) are fixed."
        )
    host = parts.hostname
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return f"{parts.scheme}://{netloc}"


def check_container_host(image: str, allow_hosts: list[str], server_host: str) -> str:
    """The base URL of an Image that may be used; raises ContainerUrlError otherwise."""
    base = container_base_url(image)
    host = (urlsplit(base).hostname or "").lower()
    if host_allowed(host, allow_hosts, server_host):
        return base
    raise ContainerUrlError(
        f"Image host {host} is not in the container allow-list (container_allow_hosts)"
        + (
            "; loopback hosts are allowed by default only when the server listens on loopback."
            if is_loopback(host)
            else "."
        )
    )
