"""A scripted load takes an endpoint 0 -> 1 -> N -> 0 under AWS's recipe, and the
metrics (CloudWatch and Prometheus) agree with the load."""

from __future__ import annotations

import datetime
import json
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from acceptance.helpers import deploy, wait_for_status
from conftest import wait_until

from .conftest import variant_counts
from .test_recipe import apply_recipe_with_boto3

ENDPOINT = "load"
AT_ZERO = 4  # requests sent while the endpoint has no instance (under the target of 5)
BURST = 16  # then sent to one instance: 16 per instance > 5, so it scales out


class DesiredCounts(threading.Thread):
    """Records every DesiredInstanceCount the endpoint shows, in order."""

    def __init__(self, sagemaker) -> None:
        super().__init__(daemon=True)
        self.sagemaker = sagemaker
        self.seen: list[int] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            desired, _ = variant_counts(self.sagemaker, ENDPOINT)
            if not self.seen or self.seen[-1] != desired:
                self.seen.append(desired)
            time.sleep(0.1)


def statistics(cloudwatch, metric: str, stat: str, variant: bool = True) -> list[float]:
    dimensions = [{"Name": "EndpointName", "Value": ENDPOINT}]
    if variant:
        dimensions.append({"Name": "VariantName", "Value": "AllTraffic"})
    now = datetime.datetime.now(datetime.UTC)
    datapoints = cloudwatch.get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName=metric,
        Dimensions=dimensions,
        StartTime=now - datetime.timedelta(minutes=10),
        EndTime=now + datetime.timedelta(minutes=1),
        Period=60,
        Statistics=[stat],
    )["Datapoints"]
    return [d[stat] for d in sorted(datapoints, key=lambda d: d["Timestamp"])]


@pytest.fixture(scope="module")
def load_run(scaled_server):
    """Runs the load once for the module's tests: (server, desired counts seen)."""
    server = scaled_server
    sagemaker = server.client("sagemaker")
    autoscaling = server.client("application-autoscaling")
    deploy(server, ENDPOINT, instances=1)
    apply_recipe_with_boto3(server, ENDPOINT)
    resource = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": f"endpoint/{ENDPOINT}/variant/AllTraffic",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
    }
    # A maximum of 0 takes it to zero at once; then it may scale up to 4 again.
    autoscaling.register_scalable_target(**resource, MinCapacity=0, MaxCapacity=0)
    wait_until(lambda: variant_counts(sagemaker, ENDPOINT) == (0, 0), "at zero")
    autoscaling.register_scalable_target(**resource, MinCapacity=0, MaxCapacity=4)
    recorder = DesiredCounts(sagemaker)
    recorder.start()

    runtime = server.client("sagemaker-runtime")

    def invoke(seconds: float) -> str:
        response = runtime.invoke_endpoint_async(
            EndpointName=ENDPOINT,
            InputLocation=f"s3://acceptance/in/sleep-{seconds}.json",
            ContentType="application/json",
        )
        return response["InferenceId"]

    s3 = server.client("s3")
    for seconds in (0.5, 1.0):
        s3.put_object(
            Bucket="acceptance",
            Key=f"in/sleep-{seconds}.json",
            Body=json.dumps({"action": "sleep", "seconds": seconds}).encode(),
        )
    first = [invoke(0.5) for _ in range(AT_ZERO)]
    wait_until(lambda: variant_counts(sagemaker, ENDPOINT)[1] == 1, "one instance running")
    burst = [invoke(1.0) for _ in range(BURST)]
    for inference_id in first + burst:
        assert wait_for_status(server, ENDPOINT, inference_id, timeout=90)["Status"] == "Completed"
    wait_until(lambda: variant_counts(sagemaker, ENDPOINT) == (0, 0), "back at zero", 90)
    recorder.running = False
    recorder.join()
    return server, recorder.seen


def test_load_takes_the_endpoint_from_zero_to_one_to_several_and_back(load_run) -> None:
    _, seen = load_run
    assert seen[0] == 0 and seen[-1] == 0
    assert seen[1] == 1, seen
    assert max(seen) > 1, seen


def test_backlog_at_zero_instances_is_the_number_of_requests_sent(load_run) -> None:
    server, _ = load_run
    cloudwatch = server.client("cloudwatch")
    # While nothing ran, the whole backlog waited without capacity.
    assert max(statistics(cloudwatch, "ApproximateBacklogSize", "Maximum", False)) >= AT_ZERO
    at_zero = [
        size
        for size, without in zip(
            statistics(cloudwatch, "ApproximateBacklogSize", "Minimum", False),
            statistics(cloudwatch, "HasBacklogWithoutCapacity", "Minimum", False),
            strict=True,
        )
        if without == 1
    ]
    assert at_zero and max(at_zero) == AT_ZERO
    assert max(statistics(cloudwatch, "ApproximateBacklogSizePerInstance", "Maximum", False)) > 5


def test_outcome_and_latency_metrics_count_every_request_in_their_units(load_run) -> None:
    server, _ = load_run
    cloudwatch = server.client("cloudwatch")
    total = AT_ZERO + BURST
    assert sum(statistics(cloudwatch, "Invocations", "Sum")) == total
    wait_until(
        lambda: sum(statistics(cloudwatch, "InvocationsProcessed", "Sum")) == total,
        "processed counted",
        10,
    )
    assert sum(statistics(cloudwatch, "InvocationFailures", "Sum")) == 0
    assert sum(statistics(cloudwatch, "TimeInBacklog", "SampleCount")) == total
    # ModelLatency in microseconds: every request slept at least half a second.
    assert min(statistics(cloudwatch, "ModelLatency", "Minimum")) >= 500_000
    # TimeInBacklog in milliseconds: the first requests waited for the scale-up.
    assert max(statistics(cloudwatch, "TimeInBacklog", "Maximum")) >= 1000
    assert min(statistics(cloudwatch, "TotalProcessingTime", "Minimum")) >= 500
    assert sum(statistics(cloudwatch, "RequestDownloadLatency", "SampleCount")) == total


def test_prometheus_text_parses_and_agrees_with_the_load(load_run) -> None:
    server, _ = load_run
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    labels = (("endpoint", ENDPOINT), ("variant", "AllTraffic"))
    total = AT_ZERO + BURST
    assert samples[("sagequeue_invocations_total", labels)] == total
    assert samples[("sagequeue_invocations_processed_total", labels)] == total
    assert samples[("sagequeue_model_latency_seconds_count", labels)] == total
    assert samples[("sagequeue_model_latency_seconds_sum", labels)] >= 0.5 * total
    slow = (*labels, ("le", "0.25"))
    assert samples[("sagequeue_model_latency_seconds_bucket", tuple(sorted(slow)))] == 0
    assert samples[("sagequeue_approximate_backlog_size", (("endpoint", ENDPOINT),))] == 0
