"""The S3 object store down, then back: moto is stopped and started again (behind a gate
on the port sagequeue uses, so that its buckets are made again before anyone can reach
it). Requests keep their promise: transient errors are retried within the invocation
timeout, so a request whose timeout outlasts the outage completes; one whose timeout does
not is Failed with the reason (its failure object written once the store is back); and a
request whose failure object cannot be written within failure_write_timeout goes back to
the queue and ends once the store is back."""

from __future__ import annotations

import json
import threading
import time

import pytest
from botocore.exceptions import ClientError

from acceptance.helpers import deploy

from .conftest import (
    MOTO_ENV,
    Accepted,
    Backend,
    Cluster,
    Gate,
    MotoServer,
    StoreReader,
    client,
    settle,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def invoke(server, endpoint: str, accepted: dict[str, Accepted], name: str, **params) -> str:
    runtime = client(server, "sagemaker-runtime")
    if "InputLocation" not in params:
        params["Body"] = json.dumps({"action": "echo", "value": name}).encode()
    response = runtime.invoke_endpoint_async(
        EndpointName=endpoint, InferenceId=name, ContentType="application/json", **params
    )
    accepted[name] = Accepted(response["OutputLocation"], response["FailureLocation"])
    return name


def status_of(cluster: Cluster, endpoint: str, name: str) -> tuple[str, int, str | None]:
    ((_, status, attempts, reason),) = StoreReader(cluster).rows(endpoint)[name]
    return status, attempts, reason


def test_requests_keep_their_promise_while_the_object_store_is_down_and_back(
    cluster_factory, tmp_path, figures
) -> None:
    moto = MotoServer(tmp_path)
    moto.start()
    gate = Gate(moto.port)
    gate.open()
    store_args = ["--object-store", "s3://", "--s3-endpoint-url", gate.url]
    backend = Backend("sqlite", store_args, MOTO_ENV)
    # Two servers: failure objects retried longer than the outage, and shorter.
    patient = cluster_factory(backend)
    hasty = cluster_factory(backend)
    starters = [
        threading.Thread(target=patient.add, args=("all",)),
        threading.Thread(
            target=hasty.add,
            args=("all",),
            kwargs={"env": {"SAGEQUEUE_FAILURE_WRITE_TIMEOUT": "1"}},
        ),
    ]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join()
    try:
        deploy(patient.api(), "outage-a", bucket="outage-one")
        deploy(hasty.api(), "outage-b", bucket="outage-two")
        for cluster in (patient, hasty):
            StoreReader(cluster).install_audit()
        client(patient.api(), "s3").put_object(
            Bucket="outage-one", Key="inputs/c.json", Body=b'{"action": "echo", "value": 3}'
        )
        one: dict[str, Accepted] = {}
        two: dict[str, Accepted] = {}

        gate.close()
        moto.stop()
        down_at = time.monotonic()
        # Accepted while the store is down: the queue does not need it.
        waits = invoke(patient.api(), "outage-a", one, "waits", InvocationTimeoutSeconds=60)
        late = invoke(patient.api(), "outage-a", one, "output-late", InvocationTimeoutSeconds=1)
        unread = invoke(
            patient.api(),
            "outage-a",
            one,
            "input-unread",
            InputLocation="s3://outage-one/inputs/c.json",
            InvocationTimeoutSeconds=1,
        )
        requeued = invoke(hasty.api(), "outage-b", two, "requeued", InvocationTimeoutSeconds=1)
        # The S3 API answers what the store cannot do with 503, by design.
        with pytest.raises(ClientError) as refused:
            client(patient.api(), "s3").get_object(Bucket="outage-one", Key="inputs/c.json")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        # The request whose failure object cannot be written goes back to the queue.
        wait_until(
            lambda: "goes back to the queue" in hasty.processes["all"].log_text(),
            "a request back in the queue",
            30,
        )
        wait_until(lambda: time.monotonic() - down_at > 6, "six seconds of outage", 10)
        for cluster, endpoint, names in (
            (patient, "outage-a", (waits, late, unread)),
            (hasty, "outage-b", (requeued,)),
        ):
            for name in names:
                assert status_of(cluster, endpoint, name)[0] not in ("Completed", "Failed")
        outage_seconds = time.monotonic() - down_at

        moto.start()
        for bucket in ("outage-one", "outage-two"):
            moto.client().create_bucket(Bucket=bucket)
        gate.open()

        first = settle(patient, one, "outage-a", "outage-one", timeout=60)
        second = settle(hasty, two, "outage-b", "outage-two", timeout=60)
    finally:
        gate.close()
        moto.stop()
    assert (first.problems, second.problems) == ([], [])
    assert status_of(patient, "outage-a", waits)[0] == "Completed"
    status, _, reason = status_of(patient, "outage-a", late)
    assert status == "Failed"
    assert reason.startswith(
        f"Could not write the output to {one[late].output}: ServiceUnavailable"
    )
    status, _, reason = status_of(patient, "outage-a", unread)
    assert status == "Failed"
    assert reason.startswith(
        "Could not read the input from s3://outage-one/inputs/c.json: ServiceUnavailable"
    )
    assert status_of(hasty, "outage-b", requeued)[0] in ("Completed", "Failed")
    figures.record(
        "outage",
        "S3 object store down and back (moto restarted)",
        backend="sqlite",
        outage_seconds=round(outage_seconds, 1),
        requests=len(one) + len(two),
        accepted=first.accepted + second.accepted,
        completed=first.by_status["Completed"] + second.by_status["Completed"],
        failed_with_reason=first.by_status["Failed"] + second.by_status["Failed"],
        requeued=1,
        lost=first.lost + second.lost,
        duplicates=first.duplicates + second.duplicates,
        server_errors_by_design=1,
        server_errors=0,
    )
