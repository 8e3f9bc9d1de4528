"""Endpoints as SageMaker runs them, with boto3 against a real server: weights and
capacities changed live (UpdateEndpointWeightsAndCapacities), an UpdateEndpoint under
load, and the ValidationExceptions of bad input, which change nothing."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from .helpers import (
    StatusClient,
    create_labelled_model,
    create_variant_config,
    read_object,
    wait_for_instances,
    wait_in_service,
)

# The runtime API reuses an endpoint document this long (ENDPOINT_CACHE_SECONDS).
CACHE_SECONDS = 0.5


@pytest.fixture(scope="module")
def ab_endpoint(shared_server) -> str:
    """Variants A and B (models answering "A" and "B"), weighted 1:1, one instance each."""
    create_labelled_model(shared_server, "ab-a", "A")
    create_labelled_model(shared_server, "ab-b", "B")
    create_variant_config(
        shared_server, "ab-config", [("A", "ab-a", 1.0), ("B", "ab-b", 1.0)], concurrency=4
    )
    shared_server.client("sagemaker").create_endpoint(
        EndpointName="ab", EndpointConfigName="ab-config"
    )
    wait_in_service(shared_server, "ab")
    return "ab"


def send(server, endpoint: str, count: int) -> list[tuple[str, str]]:
    """Send ``count`` requests; (variant shown by the status call, model that answered)."""
    runtime = server.client("sagemaker-runtime")
    ids = [
        runtime.invoke_endpoint_async(
            EndpointName=endpoint, ContentType="application/json", Body=b'{"value": 1}'
        )["InferenceId"]
        for _ in range(count)
    ]
    s3 = server.client("s3")
    status = StatusClient(server)
    served = []
    deadline = time.monotonic() + 60
    for inference_id in ids:
        while (final := status.status(endpoint, inference_id))["Status"] != "Completed":
            assert final["Status"] in ("Queued", "InProgress"), final
            assert time.monotonic() < deadline
            time.sleep(0.02)
        body, _ = read_object(s3, final["OutputLocation"])
        served.append((final["InvokedProductionVariant"], json.loads(body)["model"]))
    status.close()
    return served


def set_weights(server, endpoint: str, **weights: float) -> dict:
    server.client("sagemaker").update_endpoint_weights_and_capacities(
        EndpointName=endpoint,
        DesiredWeightsAndCapacities=[
            {"VariantName": name, "DesiredWeight": weight} for name, weight in weights.items()
        ],
    )
    time.sleep(CACHE_SECONDS)
    return wait_in_service(server, endpoint)


def test_weights_move_traffic_live(shared_server, ab_endpoint: str) -> None:
    served = send(shared_server, ab_endpoint, 40)
    assert all(variant == model for variant, model in served)
    assert set(Counter(variant for variant, _ in served)) == {"A", "B"}

    described = set_weights(shared_server, ab_endpoint, A=0.0, B=2.0)
    assert [(v["CurrentWeight"], v["DesiredWeight"]) for v in described["ProductionVariants"]] == [
        (0.0, 0.0),
        (2.0, 2.0),
    ]
    assert send(shared_server, ab_endpoint, 30) == [("B", "B")] * 30

    set_weights(shared_server, ab_endpoint, A=1.0, B=0.0)
    assert send(shared_server, ab_endpoint, 30) == [("A", "A")] * 30
    set_weights(shared_server, ab_endpoint, A=1.0, B=1.0)


def test_capacity_changes_start_and_stop_instances(shared_server, ab_endpoint: str) -> None:
    sagemaker = shared_server.client("sagemaker")
    sagemaker.update_endpoint_weights_and_capacities(
        EndpointName=ab_endpoint,
        DesiredWeightsAndCapacities=[{"VariantName": "B", "DesiredInstanceCount": 2}],
    )
    assert sagemaker.describe_endpoint(EndpointName=ab_endpoint)["EndpointStatus"] == "Updating"
    described = wait_in_service(shared_server, ab_endpoint)
    assert [v["DesiredInstanceCount"] for v in described["ProductionVariants"]] == [1, 2]
    wait_for_instances(shared_server, ab_endpoint, {"A": 1, "B": 2})

    sagemaker.update_endpoint_weights_and_capacities(
        EndpointName=ab_endpoint,
        DesiredWeightsAndCapacities=[{"VariantName": "B", "DesiredInstanceCount": 1}],
    )
    wait_in_service(shared_server, ab_endpoint)
    wait_for_instances(shared_server, ab_endpoint, {"A": 1, "B": 1})


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"VariantName": "C", "DesiredWeight": 1.0}], 'variant name(s) "C" is/are not present'),
        (
            [{"VariantName": "A", "DesiredWeight": -1.0}],
            "Member must have value greater than or equal to 0",
        ),
        (
            [{"VariantName": "A", "DesiredWeight": 0.0}, {"VariantName": "B", "DesiredWeight": 0}],
            "must be greater than 0",
        ),
        (
            [{"VariantName": "A", "DesiredInstanceCount": -2}],
            "Member must have value greater than or equal to 0",
        ),
    ],
    ids=["unknown-variant", "negative-weight", "all-weights-zero", "negative-count"],
)
def test_bad_weights_and_capacities_are_validation_exceptions_and_change_nothing(
    shared_server, ab_endpoint: str, entries: list[dict], message: str
) -> None:
    # botocore refuses negative values itself: send them as a client without its checks would.
    sagemaker = shared_server.client("sagemaker", parameter_validation=False)
    before = sagemaker.describe_endpoint(EndpointName=ab_endpoint)
    with pytest.raises(ClientError) as caught:
        sagemaker.update_endpoint_weights_and_capacities(
            EndpointName=ab_endpoint, DesiredWeightsAndCapacities=entries
        )
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert message in error["Message"]
    after = sagemaker.describe_endpoint(EndpointName=ab_endpoint)
    for described in (before, after):
        described.pop("ResponseMetadata")
    assert after == before


def test_update_to_a_config_of_other_variants_is_refused_and_changes_nothing(
    shared_server, ab_endpoint: str
) -> None:
    sagemaker = shared_server.client("sagemaker")
    create_variant_config(shared_server, "ab-other-shape", [("AllTraffic", "ab-a", 1.0)])
    before = sagemaker.describe_endpoint(EndpointName=ab_endpoint)
    with pytest.raises(ClientError) as caught:
        sagemaker.update_endpoint(EndpointName=ab_endpoint, EndpointConfigName="ab-other-shape")
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert "ab-other-shape (AllTraffic)" in error["Message"]
    after = sagemaker.describe_endpoint(EndpointName=ab_endpoint)
    for described in (before, after):
        described.pop("ResponseMetadata")
    assert after == before


# ------------------------------------------------------------------ UpdateEndpoint under load

LOAD_THREADS = 4
# Each loader waits this long between requests: a little more than the endpoint runs (two
# instances, 2 at a time each, 50 ms a request), so that requests queue up.
LOAD_PAUSE_SECONDS = 0.03
MAX_REQUESTS = 3000
LOAD_SECONDS_AFTER_SWITCH = 1.5


def test_update_under_load_loses_and_fails_nothing_and_then_serves_the_new_model(
    shared_server,
) -> None:
    server = shared_server
    sagemaker = server.client("sagemaker")
    create_labelled_model(server, "rolling-v1", "v1")
    create_labelled_model(server, "rolling-v2", "v2")
    for config, model in (("rolling-1", "rolling-v1"), ("rolling-2", "rolling-v2")):
        create_variant_config(
            server, config, [("AllTraffic", model, 1.0)], instances=2, concurrency=2
        )
    sagemaker.create_endpoint(EndpointName="rolling", EndpointConfigName="rolling-1")
    wait_in_service(server, "rolling")

    stop = threading.Event()
    sent: list[str] = []
    lock = threading.Lock()
    # Each request runs a little while, so that some are in flight at the switch.
    body = json.dumps({"action": "sleep", "seconds": 0.05, "value": 1}).encode()

    def load() -> None:
        runtime = server.client("sagemaker-runtime")
        while not stop.is_set():
            with lock:
                if len(sent) >= MAX_REQUESTS:
                    return
            inference_id = runtime.invoke_endpoint_async(
                EndpointName="rolling", ContentType="application/json", Body=body
            )["InferenceId"]
            with lock:
                sent.append(inference_id)
            time.sleep(LOAD_PAUSE_SECONDS)

    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        loaders = [pool.submit(load) for _ in range(LOAD_THREADS)]
        time.sleep(1.0)
        sagemaker.update_endpoint(EndpointName="rolling", EndpointConfigName="rolling-2")
        deadline = time.monotonic() + 60
        while True:
            described = sagemaker.describe_endpoint(EndpointName="rolling")
            if described["EndpointConfigName"] == "rolling-2":
                break
            assert described["EndpointStatus"] == "Updating", described
            assert time.monotonic() < deadline, "the update did not go live"
            time.sleep(0.05)
        switch_seen = time.time()
        assert described["EndpointStatus"] == "InService"
        time.sleep(LOAD_SECONDS_AFTER_SWITCH)
        stop.set()
        for loader in loaders:
            loader.result()

    s3 = server.client("s3")
    status = StatusClient(server)
    finals = {}
    deadline = time.monotonic() + 60
    for inference_id in sent:
        while (final := status.status("rolling", inference_id))["Status"] in (
            "Queued",
            "InProgress",
        ):
            assert time.monotonic() < deadline, f"{inference_id} did not finish"
            time.sleep(0.02)
        finals[inference_id] = final
    status.close()

    assert Counter(f["Status"] for f in finals.values()) == {"Completed": len(sent)}
    models = {
        i: json.loads(read_object(s3, f["OutputLocation"])[0])["model"] for i, f in finals.items()
    }
    after_switch = [i for i, f in finals.items() if f["EnqueuedTime"] > switch_seen]
    started_after = [i for i, f in finals.items() if f["StartTime"] > switch_seen]
    assert after_switch and {models[i] for i in after_switch} == {"v2"}
    assert {models[i] for i in started_after} == {"v2"}
    queued_at_switch = [i for i in started_after if i not in after_switch]
    assert queued_at_switch  # requests waiting at the switch ran on the new model
    assert "v1" in models.values()  # the load ran across the switch
    # Each ran once: nothing was retried.
    assert {f["Attempts"] for f in finals.values()} == {1}
