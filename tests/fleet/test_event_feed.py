"""The push feed across processes: an ``--role api`` process streams a request's state
changes (server-sent events) while a ``--role worker`` process runs and finishes it, on one
shared store; the stream outlives the HTTP idle timeouts and ends after the final state.
``sagequeue wait`` follows the same feed."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from types import SimpleNamespace
from typing import Any

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.httpsession import URLLib3Session

from acceptance.helpers import deploy, wait_for_status
from conftest import ServerProcess, wait_until
from sagequeue.cli import waiting

from .conftest import Fleet

pytestmark = pytest.mark.slow

# Far shorter than the stream lives: the feed must not be cut by them.
SHORT_LIMITS = ["--header-timeout", "1", "--keep-alive-timeout", "1", "--body-timeout", "1"]


def events_url(server: ServerProcess, endpoint: str, inference_id: str) -> str:
    quoted = urllib.parse.quote(inference_id, safe="")
    return f"{server.url}/endpoints/{endpoint}/async-invocations/{quoted}/events"


class EventReader(threading.Thread):
    """Reads one SigV4-signed event stream to its end, keeping each event's data."""

    def __init__(self, url: str, credentials: tuple[str, str]) -> None:
        super().__init__(daemon=True)
        request = AWSRequest(method="GET", url=url)
        SigV4Auth(Credentials(*credentials), "sagemaker", "us-east-1").add_auth(request)
        prepared = request.prepare()
        self.request = urllib.request.Request(prepared.url, headers=dict(prepared.headers))
        self.events: list[dict[str, Any]] = []
        self.arrivals: list[float] = []  # time.time() each event arrived
        self.content_type = ""
        self.ended = False

    def run(self) -> None:
        with urllib.request.urlopen(self.request, timeout=60) as response:
            self.content_type = response.headers["content-type"]
            data: list[str] = []
            for raw in response:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    self.events.append(json.loads("\n".join(data)))
                    self.arrivals.append(time.time())
                    data = []
        self.ended = True

    @property
    def statuses(self) -> list[str]:
        return [event["Status"] for event in self.events]


def feed_fleet(fleet_factory, store: dict[str, Any]) -> Fleet:
    """An API process and a worker on one store, with an endpoint deployed; the worker is
    then stopped, so that requests wait Queued until one starts again."""
    fleet = fleet_factory(store["shared_args"], env=store.get("env"), hosts=store["hosts"])
    api = fleet._process(["--role", "api", *store["shared_args"], *SHORT_LIMITS]).start()
    fleet.apis.append(api)
    worker = fleet.start_worker()
    deploy(api, "feed")
    worker.stop()
    return fleet


@pytest.fixture
def fleet(fleet_factory, fleet_store: dict[str, Any]) -> Fleet:
    """On SQLite (one host) and on PostgreSQL with S3 (a data dir per process)."""
    return feed_fleet(fleet_factory, fleet_store)


@pytest.fixture
def sqlite_fleet(fleet_factory) -> Fleet:
    return feed_fleet(fleet_factory, {"shared_args": [], "hosts": False})


def enqueue(fleet: Fleet, body: dict[str, Any]) -> dict[str, Any]:
    return fleet.api.client("sagemaker-runtime").invoke_endpoint_async(
        EndpointName="feed", Body=json.dumps(body).encode(), ContentType="application/json"
    )


def test_event_stream_shows_every_state_across_processes(
    fleet: Fleet, fleet_store: dict[str, Any]
) -> None:
    response = enqueue(fleet, {"action": "sleep", "seconds": 1.5, "value": "done"})
    reader = EventReader(
        events_url(fleet.api, "feed", response["InferenceId"]), fleet.api.credentials
    )
    reader.start()
    wait_until(lambda: reader.statuses == ["Queued"], "the stream shows Queued", timeout=10)
    time.sleep(2.5)  # quiet for longer than every HTTP timeout of the API process
    assert reader.is_alive() and reader.statuses == ["Queued"]

    fleet.start_worker()
    reader.join(60)

    assert reader.ended
    assert reader.content_type == "text/event-stream"
    assert reader.statuses == ["Queued", "InProgress", "Completed"]
    final = reader.events[-1]
    assert final == wait_for_status(fleet.api, "feed", response["InferenceId"])
    assert final["OutputLocation"] == response["OutputLocation"]
    assert reader.events[1]["StartTime"] == final["StartTime"]
    assert "EndTime" not in reader.events[1]
    # Prompt: polling with backoff (SQLite) or the store's change notices (PostgreSQL;
    # its fallback read every 5 s would be late).
    assert reader.arrivals[-1] - final["EndTime"] < 1.5
    if "database" in fleet_store:  # the API process listens for the change notices
        import psycopg

        with psycopg.connect(fleet_store["database"]) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN sagequeue_changes'"
            ).fetchone()
        assert row is not None and row[0] == 1


def test_sagequeue_wait_follows_the_feed(sqlite_fleet: Fleet) -> None:
    fleet = sqlite_fleet
    response = enqueue(fleet, {"action": "sleep", "seconds": 0.5, "value": 3})
    access, secret = fleet.api.credentials
    session = botocore.session.get_session()
    session.set_credentials(access, secret)
    context = SimpleNamespace(
        endpoint_url=fleet.api.url,
        args=SimpleNamespace(sign_request=True),
        session=session,
        region="us-east-1",
    )
    seen: list[str] = []
    threading.Timer(1.0, fleet.start_worker).start()

    final = waiting.follow_events(
        context, URLLib3Session(timeout=60), "feed", response["InferenceId"], seen.append
    )

    assert final is not None and final.status == "Completed"
    assert [state.status for state in seen] == ["Queued", "InProgress", "Completed"]
    assert final.output_location == response["OutputLocation"]
    # A stream opened on a finished request gives its final state and ends.
    late = EventReader(
        events_url(fleet.api, "feed", response["InferenceId"]), fleet.api.credentials
    )
    late.run()
    assert late.ended and late.statuses == ["Completed"]


def test_an_open_stream_does_not_hold_up_a_graceful_stop(sqlite_fleet: Fleet) -> None:
    fleet = sqlite_fleet
    response = enqueue(fleet, {"action": "echo", "value": "never run"})
    reader = EventReader(
        events_url(fleet.api, "feed", response["InferenceId"]), fleet.api.credentials
    )
    reader.start()
    wait_until(lambda: reader.statuses == ["Queued"], "the stream shows Queued", timeout=10)

    started = time.monotonic()
    assert fleet.api.stop(timeout=20) == 0

    assert time.monotonic() - started < 10  # not the 30 s graceful-stop timeout
    reader.join(5)
    assert reader.ended and reader.statuses == ["Queued"]
