"""``serve``'s logging: a bad level is a usage error, and no secret or signature reaches
the log, even at debug level with the s3:// object backend (botocore logs its signed
requests at debug)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ServerProcess, free_port

BACKEND_SECRET = "backend-secret-5f3c9a1e7b2d4068"


def test_unknown_log_level_is_a_one_line_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagequeue",
            "serve",
            "--log-level",
            "trace",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "sagequeue serve: log-level must be one of debug, info, warning, error, not 'trace'"
    ]


def test_debug_log_with_the_s3_backend_holds_no_secret_or_signature(
    tmp_path: Path, moto_endpoint: str
) -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "backendaccesskey",
        "AWS_SECRET_ACCESS_KEY": BACKEND_SECRET,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    server = ServerProcess(
        data_dir=tmp_path / "data",
        port=free_port(),
        extra_args=[
            "--log-level",
            "debug",
            "--object-store",
            "s3://",
            "--s3-endpoint-url",
            moto_endpoint,
        ],
        env=env,
    ).start()
    try:
        s3: Any = server.client("s3")
        s3.create_bucket(Bucket="logged")
        s3.put_object(Bucket="logged", Key="k", Body=b"payload")
        assert s3.get_object(Bucket="logged", Key="k")["Body"].read() == b"payload"
        with pytest.raises(s3.exceptions.NoSuchKey):  # logged at debug by the front door
            s3.get_object(Bucket="logged", Key="missing")
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "logged", "Key": "k"})
        import urllib.request

        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read() == b"payload"
        _, server_secret = server.credentials
    finally:
        server.stop()
    log = server.log_text()
    assert " DEBUG " in log  # the level really was debug
    assert "botocore" in log or "s3" in log
    assert BACKEND_SECRET not in log
    assert server_secret not in log
    assert not re.search(r"Signature=[0-9a-f]{64}", log)
    assert not re.search(r"Signature:\s*[0-9a-f]{64}", log)
