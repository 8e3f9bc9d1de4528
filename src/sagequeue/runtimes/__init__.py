"""Model runtimes: how a CreateModel document becomes running model instances."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sagequeue.ports import ModelRuntime
from sagequeue.runtimes.python_runtime import InstanceCrashed

if TYPE_CHECKING:
    from sagequeue.config import Settings
    from sagequeue.ports import ObjectStore

__all__ = ["InstanceCrashed", "select_runtime"]


def select_runtime(
    model_doc: dict[str, Any], objects: ObjectStore, settings: Settings
) -> ModelRuntime:
    """``http(s)://`` images -> the HTTP container runtime; anything else (``sagequeue/python``,
    SageMaker framework images) -> the built-in Python runtime."""
    container = model_doc.get("PrimaryContainer") or (model_doc.get("Containers") or [{}])[0]
    image = str(container.get("Image", ""))
    if image.startswith(("http://", "https://")):
        from sagequeue.runtimes.http_container import HttpContainerRuntime

        return HttpContainerRuntime(
            settings.container_startup_timeout,
            allow_hosts=settings.container_allow_hosts,
            server_host=settings.host,
        )
    from sagequeue.runtimes.python_runtime import PythonRuntime

    return PythonRuntime(objects, settings.data_dir)
