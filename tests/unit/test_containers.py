"""Container Image URLs (sagequeue.domain.containers)."""

from __future__ import annotations

import pytest

from sagequeue.domain.containers import (
    ContainerUrlError,
    check_container_host,
    container_base_url,
    is_loopback,
)


@pytest.mark.parametrize(
    "image,base",
    [
        ("http://model.internal:8080", "http://model.internal:8080"),
        ("http://model.internal:8080/", "http://model.internal:8080"),
        ("https://Model.Example.com", "https://model.example.com"),
        ("http://[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_only_scheme_host_and_port_are_taken(image: str, base: str) -> None:
    assert container_base_url(image) == base


@pytest.mark.parametrize(
    "image",
    [
        "http://h:1/admin",
        "http://h:1/?q=1",
        "http://h:1?q=1",
        "http://h:1#f",
        "http://u:p@h:1",
        "http://h:99999",
        "ftp://h",
        "http://",
    ],
)
def test_anything_more_is_refused(image: str) -> None:
    with pytest.raises(ContainerUrlError):
        container_base_url(image)


def test_listed_hosts_are_allowed_whatever_the_listen_address() -> None:
    assert check_container_host("http://Model.Internal:80", ["model.internal"], "0.0.0.0")


def test_unlisted_hosts_are_refused() -> None:
    with pytest.raises(ContainerUrlError, match="container_allow_hosts"):
        check_container_host("http://169.254.169.254", [], "127.0.0.1")


def test_loopback_is_allowed_by_default_only_when_listening_on_loopback() -> None:
    assert check_container_host("http://127.0.0.1:9000", [], "127.0.0.1")
    assert check_container_host("http://localhost:9000", [], "localhost")
    with pytest.raises(ContainerUrlError, match="loopback"):
        check_container_host("http://127.0.0.1:9000", [], "0.0.0.0")
    assert check_container_host("http://127.0.0.1:9000", ["127.0.0.1"], "0.0.0.0")


def test_a_star_allows_every_host() -> None:
    assert check_container_host("http://10.0.0.5:1", ["*"], "0.0.0.0")


@pytest.mark.parametrize(
    "host,loopback",
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
