"""How /ui is served: the page and its files with a strict Content-Security-Policy,
only over TLS or loopback (or with --insecure-ui), and over HTTPS with --tls-cert."""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cli.clitools import make_self_signed_cert
from conftest import ServerProcess, free_port
from console.conftest import ConsoleSite
from sagequeue.config import load_settings
from sagequeue.frontdoor.console import ConsoleFiles
from sagequeue.frontdoor.http import Request


def get(url: str, context: ssl.SSLContext | None = None, method: str = "GET"):
    request = urllib.request.Request(url, method=method)
    try:
        return urllib.request.urlopen(request, timeout=10, context=context)
    except urllib.error.HTTPError as exc:
        return exc


def test_every_console_path_is_the_page_with_a_strict_content_security_policy(
    console_site: ConsoleSite,
) -> None:
    for path in ("/ui/", "/ui/endpoints/x/invocations/y", "/ui/anything"):
        response = get(console_site.url + path)
        assert response.status == 200, path
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        body = response.read().decode()
        assert '<meta name="sagequeue-region" content="us-east-1">' in body
        # Nothing is loaded from anywhere but this server.
        assert "http://" not in body and "https://" not in body


def test_console_files_revalidate_and_unknown_ones_are_404(console_site: ConsoleSite) -> None:
    first = get(console_site.url + "/ui/static/app.js")
    assert first.status == 200
    assert first.headers["content-type"] == "text/javascript; charset=utf-8"
    request = urllib.request.Request(
        console_site.url + "/ui/static/app.js", headers={"If-None-Match": first.headers["etag"]}
    )
    with pytest.raises(urllib.error.HTTPError) as not_modified:
        urllib.request.urlopen(request, timeout=10)
    assert not_modified.value.code == 304
    assert get(console_site.url + "/ui/static/vendor/uPlot.iife.min.js").status == 200
    assert get(console_site.url + "/ui/static/nothing.js").status == 404
    assert get(console_site.url + "/ui/static/../../config.py").status == 404
    assert get(console_site.url + "/ui/", method="POST").status == 405


def test_ui_redirects_to_the_page(console_site: ConsoleSite) -> None:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(console_site.url + "/ui", timeout=10)
    assert (redirect.value.code, redirect.value.headers["location"]) == (308, "/ui/")


@pytest.mark.parametrize(
    ("flags", "enabled"),
    [
        ({}, True),
        ({"host": "127.0.0.2"}, True),
        ({"host": "::1"}, True),
        ({"host": "localhost"}, True),
        ({"host": "0.0.0.0"}, False),
        ({"host": "0.0.0.0", "insecure_ui": True}, True),
        ({"host": "10.1.2.3"}, False),
    ],
)
def test_the_console_needs_tls_or_insecure_ui_off_loopback(flags: dict, enabled: bool) -> None:
    assert load_settings(flags, environ={}).console_enabled is enabled


def test_insecure_ui_reads_a_variable_and_tls_files_must_come_in_pairs(tmp_path: Path) -> None:
    settings = load_settings({"host": "0.0.0.0"}, environ={"SAGEQUEUE_INSECURE_UI": "true"})
    assert settings.console_enabled
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(Exception, match="tls-cert and tls-key go together"):
        load_settings({"tls_cert": str(cert)}, environ={})
    with pytest.raises(Exception, match="not a readable file"):
        load_settings({"tls_cert": str(cert), "tls_key": str(tmp_path / "nope")}, environ={})


def test_a_refused_console_answers_403_with_the_reason() -> None:
    console = ConsoleFiles(enabled=False, region="us-east-1", refusal="listening on 0.0.0.0")

    async def ask():
        async def receive():
            return {"type": "http.request", "body": b""}

        request = Request("GET", "/ui/endpoints", "/ui/endpoints", "", {}, "id", receive)
        return await console(request)

    # On a thread of its own: the package's browser may hold this thread's event loop.
    with ThreadPoolExecutor(1) as thread:
        response = thread.submit(asyncio.run, ask()).result()
    assert response.status == 403
    assert b"listening on 0.0.0.0" in response.body
    assert b"--insecure-ui" in response.body and b"--tls-cert" in response.body


def test_tls_cert_serves_the_api_and_the_console_over_https(tmp_path: Path) -> None:
    cert, key = make_self_signed_cert(tmp_path)
    server = ServerProcess(
        data_dir=tmp_path / "data",
        port=free_port(),
        extra_args=["--tls-cert", str(cert), "--tls-key", str(key)],
    ).start(wait=False)
    context = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{server.port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1, context=context) as r:
                    if r.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                assert server.process.poll() is None, server.log_text()
                assert time.monotonic() < deadline, server.log_text()
                time.sleep(0.1)
        assert get(base + "/ui/", context).status == 200
        access, secret = server.credentials
        import boto3

        sagemaker = boto3.client(
            "sagemaker",
            endpoint_url=base,
            region_name="us-east-1",
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            verify=str(cert),
        )
        assert sagemaker.list_endpoints()["Endpoints"] == []
        sagemaker.close()  # else the server's stop waits for this idle TLS connection
        assert f"listening on https://127.0.0.1:{server.port}" in server.log_text()
    finally:
        server.stop()
