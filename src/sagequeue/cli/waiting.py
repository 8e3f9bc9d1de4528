"""``sagequeue wait`` / ``invoke-endpoint-async --wait``: follow an inference to its end.

Asks sagequeue's status extension (``GET /endpoints/{name}/async-invocations/{id}``, signed
with SigV4 for service ``sagemaker``); a server without it (403/404/405, e.g. real SageMaker)
is polled the way the SageMaker SDK does: HeadObject on the output, then the failure object.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError
from botocore.httpsession import URLLib3Session

if TYPE_CHECKING:
    from sagequeue.cli.aws import CliContext

WAIT_FAILED_RC = 10
WAIT_EXPIRED_RC = 11
WAIT_TIMEOUT_RC = 12

TERMINAL_STATUSES = ("Completed", "Failed", "Expired")
STATUS_UNAVAILABLE_CODES = (403, 404, 405, 501)


@dataclass
class InferenceStatus:
    status: str  # Queued | InProgress | Completed | Failed | Expired
    output_location: str | None = None
    failure_location: str | None = None
    failure_reason: str | None = None


class StatusUnavailable(Exception):
    """The server has no status extension: fall back to polling S3 objects."""


def status_url(endpoint_url: str, endpoint_name: str, inference_id: str) -> str:
    quoted_name = urllib.parse.quote(endpoint_name, safe="")
    quoted_id = urllib.parse.quote(inference_id, safe="")
    return f"{endpoint_url.rstrip('/')}/endpoints/{quoted_name}/async-invocations/{quoted_id}"


def fetch_status(
    context: CliContext, http: URLLib3Session, endpoint_name: str, inference_id: str
) -> InferenceStatus:
    request = AWSRequest(
        method="GET", url=status_url(context.endpoint_url, endpoint_name, inference_id)
    )
    if context.args.sign_request:
        credentials = context.session.get_credentials()
        SigV4Auth(credentials.get_frozen_credentials(), "sagemaker", context.region).add_auth(
            request
        )
    response = http.send(request.prepare())
    body: dict[str, Any] = {}
    try:
        body = json.loads(response.content or b"{}")
    except ValueError:
        body = {}
    if response.status_code in STATUS_UNAVAILABLE_CODES and body.get("__type") not in (
        "ValidationError",
        "ResourceNotFound",
    ):
        raise StatusUnavailable(str(response.status_code))
    if response.status_code >= 300:
        code = str(body.get("__type") or body.get("code") or response.status_code).split("#")[-1]
        error = {"Code": code, "Message": body.get("message") or body.get("Message") or ""}
        raise ClientError({"Error": error}, "DescribeAsyncInvocation")
    return InferenceStatus(
        status=body.get("Status", "Queued"),
        output_location=body.get("OutputLocation"),
        failure_location=body.get("FailureLocation"),
        failure_reason=body.get("FailureReason"),
    )


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urllib.parse.urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def object_exists(s3: Any, uri: str) -> bool:
    bucket, key = split_s3_uri(uri)
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def read_object(s3: Any, uri: str) -> bytes:
    bucket, key = split_s3_uri(uri)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def poll_objects(s3: Any, output_location: str | None, failure_location: str | None) -> str:
    """Status from the objects alone: Completed, Failed, or InProgress (unknown yet)."""
    if output_location and object_exists(s3, output_location):
        return "Completed"
    if failure_location and object_exists(s3, failure_location):
        return "Failed"
    return "InProgress"


def wait_for_result(
    context: CliContext,
    *,
    endpoint_name: str,
    inference_id: str,
    output_location: str | None,
    failure_location: str | None,
    timeout: float | None,
    output_file: str | None,
    poll_interval: float = 1.0,
) -> int:
    s3 = context.create_client("s3")
    http = URLLib3Session(
        verify=context.verify if context.verify is not None else True,
        timeout=context.client_config.read_timeout or 60,
    )
    use_status_call = True
    started = time.monotonic()
    current = InferenceStatus("Queued", output_location, failure_location)
    with progress_display() as show:
        while True:
            if use_status_call:
                try:
                    current = fetch_status(context, http, endpoint_name, inference_id)
                except StatusUnavailable:
                    use_status_call = False
            if not use_status_call:
                if not (output_location or failure_location):
                    from sagequeue.cli.aws import ParamError

                    raise ParamError(
                        "The server has no status call: give --output-location and "
                        "--failure-location to poll the result objects."
                    )
                current = InferenceStatus(
                    poll_objects(s3, output_location, failure_location),
                    output_location,
                    failure_location,
                )
            elapsed = time.monotonic() - started
            show(current.status, elapsed)
            if current.status in TERMINAL_STATUSES:
                break
            if timeout is not None and elapsed >= timeout:
                sys.stderr.write(
                    f"\nInference {inference_id} is still {current.status} after {timeout:g}s.\n"
                )
                return WAIT_TIMEOUT_RC
            time.sleep(min(poll_interval, 0.2 + elapsed / 10))
    return finish(s3, current, inference_id, output_file)


def finish(s3: Any, final: InferenceStatus, inference_id: str, output_file: str | None) -> int:
    if final.status == "Completed":
        assert final.output_location is not None
        body = read_object(s3, final.output_location)
        if output_file:
            with open(output_file, "wb") as handle:
                handle.write(body)
        else:
            sys.stdout.buffer.write(body)
            sys.stdout.flush()
        return 0
    reason = final.failure_reason
    if reason is None and final.failure_location:
        try:
            reason = read_object(s3, final.failure_location).decode("utf-8", "replace")
        except ClientError:
            reason = None
    sys.stderr.write(f"\nInference {inference_id} {final.status}: {reason or 'no reason given'}\n")
    return WAIT_EXPIRED_RC if final.status == "Expired" else WAIT_FAILED_RC


def progress_display() -> AbstractContextManager[Any]:
    """On a terminal, a rich status line (queued → in progress → done, elapsed); else silent."""
    if not sys.stderr.isatty():
        return nullcontext(lambda status, elapsed: None)
    return _RichProgress()


class _RichProgress:
    LABELS = {
        "Queued": "queued",
        "InProgress": "in progress",
        "Completed": "done",
        "Failed": "failed",
        "Expired": "expired",
    }

    def __enter__(self) -> Any:
        from rich.console import Console

        self._console = Console(stderr=True)
        self._status = self._console.status("waiting")
        self._status.__enter__()
        return self.update

    def update(self, status: str, elapsed: float) -> None:
        label = self.LABELS.get(status, status)
        self._status.update(f"{label} [dim]{elapsed:.1f}s[/dim]")
        if status in TERMINAL_STATUSES:
            self._console.log(f"{label} after {elapsed:.1f}s")

    def __exit__(self, *exc_info: object) -> None:
        self._status.__exit__(*exc_info)
