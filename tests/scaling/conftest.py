"""A server whose CloudWatch and Application Auto Scaling time runs 60 times faster
(``--time-scale 60``: a 60-second period lasts one second, a 300-second cooldown five),
so that AWS's recipes run unchanged in seconds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import ServerProcess, free_port

TIME_SCALE = 60
SECOND_PER_MINUTE = 60 / TIME_SCALE


@pytest.fixture(scope="module")
def scaled_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("scaled")
    server = ServerProcess(
        data_dir=root / "data",
        port=free_port(),
        extra_args=["--time-scale", str(TIME_SCALE)],
    ).start()
    yield server
    server.stop()


def variant_counts(sagemaker, endpoint: str) -> tuple[int, int]:
    """(DesiredInstanceCount, CurrentInstanceCount) of the endpoint's first variant."""
    variant = sagemaker.describe_endpoint(EndpointName=endpoint)["ProductionVariants"][0]
    return variant["DesiredInstanceCount"], variant["CurrentInstanceCount"]
