"""The listing extension, GET /endpoints/{name}/async-invocations (docs/api.md): an
endpoint's invocations newest first, by status, in pages, among a million rows."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from console.conftest import ENDPOINT, FILLED_ROWS, READER_KEY, ConsoleSite


def listing(
    site: ConsoleSite,
    endpoint: str = ENDPOINT,
    key: tuple[str, str] | None = None,
    **query: str,
) -> tuple[int, dict]:
    access, secret = key or site.server.credentials
    path = f"/endpoints/{urllib.parse.quote(endpoint, safe='')}/async-invocations"
    url = site.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
    request = AWSRequest(method="GET", url=url)
    SigV4Auth(Credentials(access, secret), "sagemaker", "us-east-1").add_auth(request)
    prepared = request.prepare()
    try:
        with urllib.request.urlopen(
            urllib.request.Request(prepared.url, headers=dict(prepared.headers)), timeout=10
        ) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_listing_shows_the_newest_invocations_first_with_their_state(
    console_site: ConsoleSite,
) -> None:
    status, page = listing(console_site, MaxResults="30")

    assert status == 200
    # (Other tests of the package may have sent a few more since.)
    newest = [inv["InferenceId"] for inv in page["Invocations"]]
    scripted = [i for i in newest if i.startswith("scripted-ok-")]
    assert scripted == [f"scripted-ok-{n}" for n in range(11, -1, -1)]
    first = next(inv for inv in page["Invocations"] if inv["InferenceId"] == "scripted-ok-11")
    assert first["Status"] == "Completed"
    assert first["InputLocation"] == f"s3://console/{console_site.input_key}"
    assert first["InvokedProductionVariant"] == "AllTraffic"
    assert first["Attempts"] == 1
    # (A worker's lease may stamp StartTime a hair before the API's EnqueuedTime.)
    assert first["EnqueuedTime"] <= first["EndTime"] and first["StartTime"] <= first["EndTime"]
    assert page["NextToken"]


def test_status_filter_and_pages_walk_the_failed_invocations(console_site: ConsoleSite) -> None:
    status, page = listing(console_site, StatusEquals="Failed", MaxResults="3")
    assert status == 200
    assert [inv["InferenceId"] for inv in page["Invocations"]] == [
        "scripted-fail-2",
        "scripted-fail-1",
        "scripted-fail-0",
    ]
    assert page["Invocations"][0]["FailureReason"] == console_site.failed["scripted-fail-2"]

    status, older = listing(
        console_site, StatusEquals="Failed", MaxResults="2", NextToken=page["NextToken"]
    )
    assert status == 200
    # Then the filled rows: every hundredth failed, newest first.
    assert [inv["InferenceId"] for inv in older["Invocations"]] == [
        f"filled-{FILLED_ROWS}",
        f"filled-{FILLED_ROWS - 100}",
    ]


def test_bad_listing_parameters_are_refused_with_validation_errors(
    console_site: ConsoleSite,
) -> None:
    for query, words in (
        ({"StatusEquals": "Done"}, "statusEquals"),
        ({"MaxResults": "0"}, "greater than or equal to 1"),
        ({"MaxResults": "101"}, "less than or equal to 100"),
        ({"MaxResults": "ten"}, "maxResults"),
        ({"NextToken": "not-a-token"}, "pagination token"),
        # seq:99999999999999999999999 (past a 64-bit sequence)
        ({"NextToken": "c2VxOjk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5"}, "pagination token"),
        ({"NextToken": "c2VxOi01"}, "pagination token"),  # seq:-5
    ):
        status, body = listing(console_site, **query)
        assert (status, body["__type"].split("#")[-1]) == (400, "ValidationError"), query
        assert words in body["message"], (query, body)


def test_listing_an_unknown_endpoint_is_not_found(console_site: ConsoleSite) -> None:
    status, body = listing(console_site, "no-such-endpoint")

    assert status == 400
    assert body["message"] == "Endpoint no-such-endpoint of account 000000000000 not found."


def test_a_scoped_key_needs_list_inferences_to_list(console_site: ConsoleSite) -> None:
    status, body = listing(console_site, key=READER_KEY)

    assert status == 400
    assert body["__type"].split("#")[-1] == "AccessDeniedException"
    assert "sagemaker:ListInferences" in body["message"]
