"""SIGKILL of each process role under a bounded load, then a restart, on SQLite and on
PostgreSQL (with moto's S3): every request that got a 202 ends exactly once (one row,
final, finished once, its one output or failure object)."""

from __future__ import annotations

import pytest

from acceptance.helpers import deploy
from figures import SCALE, scaled

from .conftest import (
    FAULTS,
    Backend,
    Cluster,
    Load,
    StoreReader,
    settle,
    unique_bucket,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REQUESTS = 150
# SIGKILLs per run: one in make test; more in the larger run of make reliability.
KILLS = 1 if SCALE < 2 else min(4, int(SCALE) - 1)


def start_cluster(cluster_factory, backend: Backend, topology: str, **env) -> Cluster:
    """``all``: one process; ``split``: an API process and a worker process."""
    cluster = cluster_factory(backend)
    if topology == "all":
        cluster.add("all", "all", env=env)
    else:
        cluster.add("api", "api", env=env)
        cluster.add("worker", "worker", env=env)
    return cluster


def deploy_endpoint(cluster: Cluster, name: str) -> str:
    bucket = unique_bucket(name)
    deploy(cluster.api(), name, bucket=bucket, instances=1, concurrency=4)
    StoreReader(cluster).install_audit()
    return bucket


def kill_and_restart(cluster: Cluster, name: str):
    def crash() -> None:
        cluster.kill(name)
        cluster.restart(name)

    return crash


def assert_every_promise_kept(outcome, load: Load) -> None:
    assert outcome.problems == []
    assert (outcome.lost, outcome.duplicates) == (0, 0)
    assert outcome.by_status == {"Completed": len(load.accepted)}
    assert load.server_errors == 0, load.statuses


@pytest.mark.parametrize(
    ("killed", "topology"),
    [("all", "all"), ("api", "split"), ("worker", "split")],
    ids=["all", "api-with-a-separate-worker", "worker-with-a-separate-api"],
)
def test_a_killed_process_loses_and_repeats_no_acknowledged_request(
    cluster_factory, backend: Backend, killed: str, topology: str, figures
) -> None:
    cluster = start_cluster(cluster_factory, backend, topology)
    endpoint = f"kill-{killed}"
    bucket = deploy_endpoint(cluster, endpoint)
    total = scaled(REQUESTS)
    crash = kill_and_restart(cluster, killed)
    kills_at = {total * (n + 1) // (KILLS + 2): crash for n in range(KILLS)}
    load = Load(cluster.api(), endpoint, total).run(kills_at)
    assert len(load.accepted) >= min(kills_at)  # the crashes came mid-load
    outcome = settle(cluster, load.accepted, endpoint, bucket)
    figures.record(
        "crash",
        f"SIGKILL of the `{killed}` process ({topology}, {backend.name})",
        backend=backend.name,
        requests=total,
        accepted=outcome.accepted,
        crashes=cluster.crashes,
        lost=outcome.lost,
        duplicates=outcome.duplicates,
        completed=outcome.by_status["Completed"],
        rerun=outcome.rerun,
        unacknowledged_recorded=outcome.unacknowledged_recorded,
        server_errors=load.server_errors,
        refused=dict(load.refused),
    )
    assert cluster.crashes == KILLS
    assert_every_promise_kept(outcome, load)


def test_a_crash_between_the_output_and_the_finish_reruns_the_request_once(
    cluster_factory, backend: Backend, figures
) -> None:
    """The process dies (fault point) after writing an output and before committing the
    finish: the request runs again after the restart and is finished once."""
    total = scaled(REQUESTS)
    cluster = start_cluster(
        cluster_factory, backend, "all", **{FAULTS: f"after-output-before-finish@{total // 4}"}
    )
    bucket = deploy_endpoint(cluster, "fault-finish")

    crash_logs: list[str] = []

    def restart_after_the_fault() -> None:
        wait_until(lambda: cluster.crashed("all"), "the fault point reached", 60)
        crash_logs.append(cluster.processes["all"].log_text())
        cluster.crashes += 1
        cluster.restart("all")

    load = Load(cluster.api(), "fault-finish", total).run({1: restart_after_the_fault})
    outcome = settle(cluster, load.accepted, "fault-finish", bucket)
    figures.record(
        "fault",
        f"after-output-before-finish ({backend.name})",
        point="after-output-before-finish",
        backend=backend.name,
        requests=total,
        accepted=outcome.accepted,
        crashes=cluster.crashes,
        lost=outcome.lost,
        duplicates=outcome.duplicates,
        completed=outcome.by_status["Completed"],
        rerun=outcome.rerun,
        server_errors=load.server_errors,
    )
    assert "fault injected at after-output-before-finish" in crash_logs[0]
    assert_every_promise_kept(outcome, load)
