"""``invoke-endpoint-async --upload FILE``: put the input where ``--input-location`` says
before invoking, with a progress bar on a terminal (multipart for large files, through
boto3's transfer manager and the same credentials and endpoint as the call)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sagequeue.cli.aws import CliContext


def upload_input(context: CliContext, path: str, input_location: Any) -> None:
    from sagequeue.cli.aws import ParamError

    if not isinstance(input_location, str) or not input_location.startswith("s3://"):
        raise ParamError("--upload needs --input-location s3://bucket/key: where the file goes.")
    bucket, _, key = input_location[len("s3://") :].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise ParamError(f"--input-location {input_location} must name an object to upload to.")
    expanded = os.path.expanduser(path)
    if not os.path.isfile(expanded):
        raise ParamError(f"--upload {path}: no such file")
    import boto3
    from boto3.s3.transfer import TransferConfig

    s3 = boto3.Session(botocore_session=context.session).client(
        "s3",
        region_name=context.region,
        endpoint_url=context.endpoint_url,
        verify=context.verify,
        config=context.client_config,
    )
    size = os.path.getsize(expanded)
    with upload_progress(os.path.basename(expanded), size) as advance:
        s3.upload_file(
            expanded,
            bucket,
            key,
            Callback=advance,
            Config=TransferConfig(multipart_threshold=16 * 1024 * 1024),
        )


class upload_progress:
    """On a terminal, a rich progress bar (bytes, rate, time left) on stderr; else nothing."""

    def __init__(self, name: str, size: int) -> None:
        self._name = name
        self._size = size
        self._progress: Any = None

    def __enter__(self) -> Any:
        if not sys.stderr.isatty():
            return lambda sent: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("uploading {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.__enter__()
        task = self._progress.add_task(self._name, total=self._size)
        progress = self._progress
        # boto3 calls back from its transfer threads; rich's Progress is thread-safe.
        return lambda sent: progress.advance(task, sent)

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc_info)
