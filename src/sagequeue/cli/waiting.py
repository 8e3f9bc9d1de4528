"""``sagequeue wait`` / ``invoke-endpoint-async --wait``: follow an inference to its end.

Follows sagequeue's push feed (``GET /endpoints/{name}/async-invocations/{id}/events``,
server-sent events, signed with SigV4 for service ``sagemaker``); where the feed is not
offered or its stream breaks, asks the status extension (``GET .../{id}``) repeatedly; a
server with neither (403/404/405, e.g. real SageMaker) is polled the way the SageMaker SDK
does: HeadObject on the output, then the failure object.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError, HTTPClientError, NoCredentialsError
from botocore.httpsession import URLLib3Session
from urllib3.exceptions import HTTPError as Urllib3Error

if TYPE_CHECKING:
    from sagequeue.cli.aws import CliContext

WAIT_FAILED_RC = 10
WAIT_EXPIRED_RC = 11
WAIT_TIMEOUT_RC = 12

TERMINAL_STATUSES = ("Completed", "Failed", "Expired")
STATUS_UNAVAILABLE_CODES = (403, 404, 405, 501)
# The feed sends a comment at least every 15 s: a quiet stream this long is broken.
FEED_READ_TIMEOUT = 40.0


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


def _signed(context: CliContext, url: str) -> AWSRequest:
    request = AWSRequest(method="GET", url=url)
    if context.args.sign_request:
        credentials = context.session.get_credentials()
        if credentials is None:
            raise NoCredentialsError()
        SigV4Auth(credentials.get_frozen_credentials(), "sagemaker", context.region).add_auth(
            request
        )
    return request


def _session(context: CliContext, read_timeout: float) -> URLLib3Session:
    verify: Any = context.verify if context.verify is not None else True
    timeout: Any = read_timeout  # botocore takes seconds as a float (its stubs say int)
    return URLLib3Session(verify=verify, timeout=timeout)


def _raise_for_error(status_code: int, content: bytes) -> None:
    """StatusUnavailable for a server without the call, ClientError for an error."""
    body: dict[str, Any] = {}
    try:
        body = json.loads(content or b"{}")
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if status_code in STATUS_UNAVAILABLE_CODES and body.get("__type") not in (
        "ValidationError",
        "ResourceNotFound",
    ):
        raise StatusUnavailable(str(status_code))
    if status_code >= 300:
        code = str(body.get("__type") or body.get("code") or status_code).split("#")[-1]
        message = str(body.get("message") or body.get("Message") or "")
        raise ClientError({"Error": {"Code": code, "Message": message}}, "DescribeAsyncInvocation")


def _status_of(body: dict[str, Any]) -> InferenceStatus:
    return InferenceStatus(
        status=body.get("Status", "Queued"),
        output_location=body.get("OutputLocation"),
        failure_location=body.get("FailureLocation"),
        failure_reason=body.get("FailureReason"),
    )


def fetch_status(
    context: CliContext, http: URLLib3Session, endpoint_name: str, inference_id: str
) -> InferenceStatus:
    request = _signed(context, status_url(context.endpoint_url, endpoint_name, inference_id))
    response = http.send(request.prepare())
    _raise_for_error(response.status_code, response.content)
    return _status_of(json.loads(response.content))


def follow_events(
    context: CliContext,
    http: URLLib3Session,
    endpoint_name: str,
    inference_id: str,
    on_status: Callable[[InferenceStatus], None],
) -> InferenceStatus | None:
    """Follow the push feed to the final state, calling ``on_status`` for each state;
    None when the stream ended or broke before it (the caller polls from there).
    StatusUnavailable when the server offers no feed."""
    url = status_url(context.endpoint_url, endpoint_name, inference_id) + "/events"
    prepared = _signed(context, url).prepare()
    prepared.stream_output = True
    response = http.send(prepared)
    if response.status_code != 200:
        _raise_for_error(response.status_code, response.content)
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        response.raw.release_conn()
        raise StatusUnavailable("no event stream")
    try:
        for data in _sse_data(response.raw.stream(4096, decode_content=False)):
            current = _status_of(json.loads(data))
            on_status(current)
            if current.status in TERMINAL_STATUSES:
                return current
    except (OSError, ValueError, HTTPClientError, Urllib3Error):
        pass  # a broken stream: poll from here
    finally:
        response.raw.release_conn()
    return None


def _sse_data(chunks: Iterator[bytes]) -> Iterator[str]:
    """The data of each server-sent event in a byte stream (comments and other fields
    skipped)."""
    pending = b""
    data: list[str] = []
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))


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
    data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


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
    http = _session(context, getattr(context.client_config, "read_timeout", None) or 60)
    use_status_call = True
    started = time.monotonic()
    current = InferenceStatus("Queued", output_location, failure_location)
    with progress_display() as show:
        followed = None
        try:
            feed_http = _session(
                context,
                min(FEED_READ_TIMEOUT, timeout) if timeout is not None else FEED_READ_TIMEOUT,
            )
            followed = follow_events(
                context,
                feed_http,
                endpoint_name,
                inference_id,
                lambda state: show(state.status, time.monotonic() - started),
            )
        except StatusUnavailable:
            pass
        except HTTPClientError:
            pass  # (a read timeout on a quiet stream included): poll from here
        if followed is not None:
            current = followed  # the status line closes before the result is printed
        while followed is None:
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._status.__exit__(exc_type, exc, traceback)
