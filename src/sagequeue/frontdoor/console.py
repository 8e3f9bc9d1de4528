"""The web console at ``/ui`` (docs/console.md): a single page and its static files.

The page holds no data of its own: it signs every call to the public APIs (control
plane, runtime and its status / listing extensions, CloudWatch, CloudWatch Logs,
Application Auto Scaling, S3) with SigV4 in the browser, with the key pair the user
signed in with, so the same authentication and scoped-key policies apply as to any
client, the secret never leaves the browser, and no cookie exists to forge requests
with (nothing for CSRF to ride on). This module only serves files:

* ``/ui`` redirects to ``/ui/``; ``/ui/static/<file>`` is a file of the package's
  ``sagequeue/console/static`` (read once, at start); any other ``/ui/...`` path is the
  page, whose script routes it (so that every view has an address).
* A Content-Security-Policy lets the page load and connect to this server only.
* Listening on anything but loopback, the console is served only over TLS or with
  ``--insecure-ui``; otherwise ``/ui`` answers 403 with a page that says so.
"""

from __future__ import annotations

import hashlib
import html
import mimetypes
from dataclasses import dataclass

from sagequeue.console import static_files
from sagequeue.frontdoor.http import Request, Response

PREFIX = "/ui"
STATIC_PREFIX = "/ui/static/"

# Everything from this server only; no inline script or style; never framed.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    ("content-security-policy", _CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
]
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".md": "text/plain; charset=utf-8",
    ".LICENSE": "text/plain; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load_static() -> dict[str, StaticFile]:
    """Every file under the package's static directory, by path relative to it."""
    found: dict[str, StaticFile] = {}

    def walk(folder, prefix: str) -> None:  # type: ignore[no-untyped-def]
        for entry in folder.iterdir():
            name = prefix + entry.name
            if entry.is_dir():
                walk(entry, name + "/")
            elif entry.is_file():
                body = entry.read_bytes()
                suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
                content_type = _TYPES.get(suffix) or (
                    mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
                )
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                found[name] = StaticFile(body, content_type, etag)

    walk(static_files(), "")
    return found


class ConsoleFiles:
    """Answers every ``/ui`` request (GET and HEAD; unsigned)."""

    def __init__(self, *, enabled: bool, region: str, refusal: str = "") -> None:
        self._enabled = enabled
        self._refusal = refusal
        self._files = load_static()
        shell = self._files["index.html"]
        # The page learns the signing region from the shell (a <meta> element).
        body = shell.body.replace(b"{{region}}", html.escape(region).encode())
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        self._page = StaticFile(body, shell.content_type, etag)

    @staticmethod
    def handles(path: str) -> bool:
        return path == PREFIX or path.startswith(PREFIX + "/")

    async def __call__(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _text(
                405, "Method not allowed: the console is read with GET.\n", [("allow", "GET, HEAD")]
            )
        if not self._enabled:
            return _html(403, _REFUSAL_PAGE.replace("{{reason}}", html.escape(self._refusal)))
        path = request.path
        if path == PREFIX:
            return Response(308, [("location", PREFIX + "/"), *_SECURITY_HEADERS])
        if path.startswith(STATIC_PREFIX):
            found = self._files.get(path[len(STATIC_PREFIX) :])
            if found is None or path.endswith("/index.html"):
                return _text(404, f"No console file {path}.\n")
            # Revalidated on every load (cheap: 304), so an upgrade shows at once.
            return _file(request, found, "no-cache")
        return _file(request, self._page, "no-store")


def _file(request: Request, found: StaticFile, cache: str) -> Response:
    headers = [
        ("content-type", found.content_type),
        ("etag", found.etag),
        ("cache-control", cache),
        *_SECURITY_HEADERS,
    ]
    if request.headers.get("if-none-match") == found.etag:
        return Response(304, headers)
    return Response(200, headers, found.body)


def _text(status: int, text: str, extra: list[tuple[str, str]] | None = None) -> Response:
    return Response(
        status,
        [("content-type", "text/plain; charset=utf-8"), *_SECURITY_HEADERS, *(extra or [])],
        text.encode(),
    )


def _html(status: int, page: str) -> Response:
    return Response(
        status,
        [
            ("content-type", "text/html; charset=utf-8"),
            ("cache-control", "no-store"),
            *_SECURITY_HEADERS,
        ],
        page.encode(),
    )


_REFUSAL_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Console unavailable - sagequeue</title></head>
<body><main><h1>The console is not served on this address</h1>
<p>{{reason}}</p>
<p>Start <code>sagequeue serve</code> with <code>--tls-cert</code> and <code>--tls-key</code>
(HTTPS), or listen on 127.0.0.1 and reach it through an SSH tunnel, or accept plain HTTP
with <code>--insecure-ui</code>. See docs/console.md.</p></main></body></html>
"""
