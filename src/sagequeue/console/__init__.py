"""The web console's static files (``static/``): the page, its scripts and styles, and the
vendored libraries (``static/vendor/README.md``). Served at ``/ui`` by
``sagequeue.frontdoor.console``; nothing is built or downloaded at run time."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable


def static_files() -> Traversable:
    return files(__name__) / "static"
