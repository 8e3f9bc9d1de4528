"""Weighted production variants under real traffic: boto3 clients on several threads send
10,000 requests to an endpoint of two variants weighted 1:3; the status extension shows
each request's variant, and the split follows the weights.

The variants are scaled to zero instances while the requests come in (they wait in the
queue, as on a SageMaker endpoint scaled to zero), so that the test measures the split
rather than the model; scaled back up, the first requests run on their variants."""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from .helpers import (
    StatusClient,
    create_labelled_model,
    create_variant_config,
    read_object,
    wait_for_instances,
    wait_in_service,
)

REQUESTS = 10_000
CLIENT_THREADS = 8
# The share of variant B (weight 3 of 4) may stray this far: about 6 standard deviations.
TOLERANCE = 0.025


def chunks(items: list[str], count: int) -> list[list[str]]:
    return [items[start::count] for start in range(count)]


def scale(server, instances: int) -> None:
    server.client("sagemaker").update_endpoint_weights_and_capacities(
        EndpointName="split",
        DesiredWeightsAndCapacities=[
            {"VariantName": variant, "DesiredInstanceCount": instances} for variant in "AB"
        ],
    )
    wait_in_service(server, "split")
    wait_for_instances(server, "split", {"A": instances, "B": instances})


def test_ten_thousand_requests_split_by_weight_and_each_shows_its_variant(shared_server) -> None:
    server = shared_server
    create_labelled_model(server, "split-a", "A")
    create_labelled_model(server, "split-b", "B")
    create_variant_config(
        server, "split-config", [("A", "split-a", 1.0), ("B", "split-b", 3.0)], concurrency=8
    )
    server.client("sagemaker").create_endpoint(
        EndpointName="split", EndpointConfigName="split-config"
    )
    wait_in_service(server, "split")
    scale(server, 0)
    ids = [f"split-{n:05d}" for n in range(REQUESTS)]

    def invoke(part: list[str]) -> None:
        runtime = server.client("sagemaker-runtime")
        for inference_id in part:
            runtime.invoke_endpoint_async(
                EndpointName="split",
                InferenceId=inference_id,
                ContentType="application/json",
                Body=json.dumps({"value": inference_id}).encode(),
            )

    def variants_of(part: list[str]) -> dict[str, str]:
        status = StatusClient(server)
        try:
            return {i: status.status("split", i)["InvokedProductionVariant"] for i in part}
        finally:
            status.close()

    began = time.monotonic()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(invoke, chunks(ids, CLIENT_THREADS)))
        sent = time.monotonic()
        variants = {}
        for part in pool.map(variants_of, chunks(ids, CLIENT_THREADS)):
            variants.update(part)
    print(
        f"{REQUESTS} requests sent in {sent - began:.1f} s, "
        f"their status read in {time.monotonic() - sent:.1f} s"
    )

    counts = Counter(variants.values())
    assert set(counts) == {"A", "B"}
    assert abs(counts["B"] / REQUESTS - 0.75) < TOLERANCE, counts

    # The variant shown is the one that runs it: the first requests' answers say so.
    scale(server, 1)
    s3 = server.client("s3")
    status = StatusClient(server)
    deadline = time.monotonic() + 60
    for inference_id in ids[:40]:
        while (final := status.status("split", inference_id))["Status"] != "Completed":
            assert final["Status"] in ("Queued", "InProgress"), final
            assert time.monotonic() < deadline, f"{inference_id} did not complete"
            time.sleep(0.05)
        body, _ = read_object(s3, final["OutputLocation"])
        assert json.loads(body)["model"] == variants[inference_id]
    status.close()
