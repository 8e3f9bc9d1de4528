"""Fetching a SageMaker model.tar.gz through the object store and extracting it safely.

Extracted models are cached under ``<data-dir>/models/<sha>/``, keyed by the object's
location, ETag and size, so instances of one model (and restarts) share one copy.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tarfile
import uuid
from pathlib import Path

from sagequeue.domain.errors import S3Error
from sagequeue.ports import ModelInvocationError, ObjectStore


async def fetch_model_archive(objects: ObjectStore, model_data_url: str, models_root: Path) -> Path:
    """The directory holding the extracted ``model_data_url`` (downloaded on first use)."""
    from sagequeue.stores.objects import parse_s3_uri

    try:
        bucket, key = parse_s3_uri(model_data_url)
    except ValueError as exc:
        raise ModelInvocationError(f"ModelDataUrl {model_data_url}: {exc}") from None
    try:
        info = await objects.head_object(bucket, key)
    except S3Error as exc:
        raise ModelInvocationError(
            f"Could not read ModelDataUrl {model_data_url}: {exc.code}: {exc.message}"
        ) from None
    identity = f"{bucket}/{key}\n{info.etag}\n{info.size}".encode()
    target = models_root / hashlib.sha256(identity).hexdigest()
    if target.is_dir():
        return target
    models_root.mkdir(parents=True, exist_ok=True)
    unique = uuid.uuid4().hex
    archive = models_root / f".{unique}.tar.gz"
    staging = models_root / f".{unique}.extract"
    try:
        try:
            _, stream = await objects.get_object(bucket, key)
            handle = await asyncio.to_thread(archive.open, "wb")
            try:
                async for chunk in stream:
                    await asyncio.to_thread(handle.write, chunk)
            finally:
                handle.close()
        except S3Error as exc:
            raise ModelInvocationError(
                f"Could not read ModelDataUrl {model_data_url}: {exc.code}: {exc.message}"
            ) from None
        try:
            await asyncio.to_thread(extract_archive, archive, staging)
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise ModelInvocationError(
                f"ModelDataUrl {model_data_url} is not a valid model.tar.gz: {exc}"
            ) from None
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():  # not a lost race with another instance: a real error
                raise
    finally:
        archive.unlink(missing_ok=True)
        if staging.exists():
            await asyncio.to_thread(shutil.rmtree, staging, True)
    return target


def extract_archive(archive: Path, destination: Path) -> None:
    """Extract a (gzipped) tar; members that would land outside ``destination``
    (absolute paths, ``..``, links pointing out, devices) are refused."""
    destination.mkdir(parents=True)
    root = destination.resolve()
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            target = (root / member.name).resolve()
            if member.name.startswith("/") or not target.is_relative_to(root):
                raise ValueError(f"archive member {member.name!r} would escape the model dir")
            if member.issym() or member.islnk():
                link = (target.parent / member.linkname).resolve()
                if member.linkname.startswith("/") or not link.is_relative_to(root):
                    raise ValueError(
                        f"archive link {member.name!r} -> {member.linkname!r} points outside"
                    )
            if member.isdev():
                raise ValueError(f"archive member {member.name!r} is a device")
        # The "data" filter re-checks all of the above and drops unsafe permissions.
        tar.extractall(root, members=members, filter="data")
