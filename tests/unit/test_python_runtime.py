"""The built-in Python runtime: real model processes running real handler code."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from sagequeue.config import Settings
from sagequeue.ports import ModelInvocationError, ModelRequest
from sagequeue.runtimes import InstanceCrashed, select_runtime
from sagequeue.runtimes.http_container import HttpContainerRuntime
from sagequeue.runtimes.python_runtime import PythonInstance, PythonRuntime
from sagequeue.stores.objects_local import LocalObjectStore

from .test_python_runtime_support import example_archives, make_archive, one_chunk, python_model

pytestmark = pytest.mark.anyio

BUCKET = "models"


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return example_archives(tmp_path_factory.mktemp("examples-build"))


class Harness:
    """A LocalObjectStore plus a PythonRuntime on a temporary data dir."""

    def __init__(self, root: Path) -> None:
        self.objects = LocalObjectStore(root / "objects")
        self.runtime = PythonRuntime(self.objects, root / "data")
        self.instances: list[PythonInstance] = []

    async def put(self, key: str, data: bytes) -> str:
        await self.objects.put_object(BUCKET, key, one_chunk(data))
        return f"s3://{BUCKET}/{key}"

    async def start(self, model: dict, concurrency: int = 2) -> PythonInstance:
        instance = await self.runtime.start_instance(model, concurrency)
        self.instances.append(instance)
        return instance

    async def start_files(
        self,
        files: dict[str, str | bytes],
        concurrency: int = 2,
        environment: dict[str, str] | None = None,
    ) -> PythonInstance:
        url = await self.put(
            f"m{len(self.instances)}-{time.monotonic_ns()}.tar.gz", make_archive(files)
        )
        return await self.start(python_model(url, environment), concurrency)

    async def close(self) -> None:
        for instance in self.instances:
            await instance.close()
        await self.objects.close()


@pytest.fixture
async def harness(tmp_path: Path):
    h = Harness(tmp_path)
    await h.objects.open()
    await h.objects.ensure_bucket(BUCKET)
    yield h
    await h.close()


def request(
    body: bytes,
    content_type: str | None = "application/json",
    accept: str | None = None,
    custom_attributes: str | None = None,
) -> ModelRequest:
    return ModelRequest("inf-1", body, content_type, accept, custom_attributes)


ECHO_HANDLERS = """
    import json, os, time

    def model_fn(model_dir):
        return "loaded"

    def input_fn(data, content_type):
        return data.decode() if isinstance(data, bytes) else data

    def predict_fn(data, model):
        if data == "boom":
            raise ValueError("bad input")
        if data == "crash":
            os._exit(3)
        if data.startswith("sleep"):
            time.sleep(float(data.split()[1]))
        return data

    def output_fn(prediction, accept):
        return prediction
"""


async def test_echo_example_returns_body_and_content_type(harness, archives) -> None:
    url = await harness.put("echo.tar.gz", archives["echo"])
    instance = await harness.start(python_model(url))
    response = await instance.invoke(request(b'{"a": 1}'), timeout=30)
    assert response.body == b'{"a": 1}'
    assert response.content_type == "application/json"


async def test_handler_sets_response_custom_attributes_through_context(harness, archives) -> None:
    url = await harness.put("echo.tar.gz", archives["echo"])
    instance = await harness.start(python_model(url))
    response = await instance.invoke(request(b"x", "text/plain"), timeout=30)
    assert response.custom_attributes == "echo=1"


async def test_sklearn_example_answers_json(harness, archives) -> None:
    url = await harness.put("sklearn.tar.gz", archives["sklearn"])
    instance = await harness.start(python_model(url))
    body = json.dumps([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]).encode()
    response = await instance.invoke(request(body), timeout=30)
    assert json.loads(response.body) == {
        "predictions": [0, 2],
        "labels": ["setosa", "virginica"],
    }


async def test_sklearn_example_answers_csv(harness, archives) -> None:
    url = await harness.put("sklearn.tar.gz", archives["sklearn"])
    instance = await harness.start(python_model(url))
    response = await instance.invoke(
        request(b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n", "text/csv", "text/csv"), timeout=30
    )
    assert (response.body, response.content_type) == (b"0\n2\n", "text/csv")


async def test_default_decoders_and_encoders_handle_npy(harness) -> None:
    instance = await harness.start_files(
        {"code/inference.py": "def model_fn(model_dir):\n    return lambda x: x * 2\n"}
    )
    buffer = io.BytesIO()
    np.save(buffer, np.array([1.0, 2.0]))
    response = await instance.invoke(
        request(buffer.getvalue(), "application/x-npy", "application/x-npy"), timeout=30
    )
    assert response.content_type == "application/x-npy"
    assert np.load(io.BytesIO(response.body)).tolist() == [2.0, 4.0]


async def test_default_json_decoder_and_default_accept_json(harness) -> None:
    instance = await harness.start_files(
        {"code/inference.py": "def model_fn(model_dir):\n    return lambda x: x + 1\n"}
    )
    response = await instance.invoke(request(b"[1, 2]", "application/json"), timeout=30)
    assert (json.loads(response.body), response.content_type) == ([2, 3], "application/json")


async def test_default_csv_decoder_and_encoder(harness) -> None:
    instance = await harness.start_files(
        {"code/inference.py": "def model_fn(model_dir):\n    return lambda x: x * 10\n"}
    )
    response = await instance.invoke(request(b"1,2\n3,4\n", "text/csv", "text/csv"), timeout=30)
    assert response.body.decode().split() == ["10.0,20.0", "30.0,40.0"]


async def test_handler_exception_fails_with_type_and_message(harness) -> None:
    instance = await harness.start_files({"code/inference.py": ECHO_HANDLERS})
    with pytest.raises(ModelInvocationError) as caught:
        await instance.invoke(request(b"boom", "text/plain"), timeout=30)
    assert caught.value.message == "ValueError: bad input"


async def test_unsupported_content_type_fails_like_the_toolkit(harness) -> None:
    instance = await harness.start_files(
        {"code/inference.py": "def model_fn(model_dir):\n    return None\n"}
    )
    with pytest.raises(ModelInvocationError) as caught:
        await instance.invoke(request(b"x", "image/png"), timeout=30)
    assert "image/png is not supported" in caught.value.message


async def test_output_fn_may_return_body_and_content_type(harness) -> None:
    instance = await harness.start_files(
        {
            "code/inference.py": """
                def model_fn(model_dir):
                    return None

                def input_fn(data, content_type):
                    return data

                def predict_fn(data, model):
                    return data

                def output_fn(prediction, accept):
                    return "<p>" + prediction + "</p>", "text/html"
            """
        }
    )
    response = await instance.invoke(request(b"hi", "text/csv"), timeout=30)
    assert (response.body, response.content_type) == (b"<p>hi</p>", "text/html")


async def test_transform_fn_gets_model_data_content_type_and_accept(harness) -> None:
    instance = await harness.start_files(
        {
            "code/inference.py": """
                def model_fn(model_dir):
                    return "M"

                def transform_fn(model, data, content_type, accept):
                    return f"{model}|{data}|{content_type}|{accept}"
            """
        }
    )
    response = await instance.invoke(request(b"d", "text/csv", "text/plain"), timeout=30)
    assert response.body == b"M|d|text/csv|text/plain"
    assert response.content_type == "text/plain"


async def test_handler_context_carries_inference_id_and_custom_attributes(harness) -> None:
    instance = await harness.start_files(
        {
            "code/inference.py": """
                def model_fn(model_dir, context):
                    return context.system_properties["model_dir"]

                def transform_fn(model, data, content_type, accept, context):
                    props = context.request_properties
                    return props["X-Amzn-SageMaker-Inference-Id"] + " " + context.custom_attributes
            """
        }
    )
    response = await instance.invoke(request(b"", "text/csv", custom_attributes="a=b"), timeout=30)
    assert response.body == b"inf-1 a=b"


async def test_sagemaker_program_names_the_handler_module(harness) -> None:
    instance = await harness.start_files(
        {
            "code/serve.py": "def model_fn(d):\n    return 1\n"
            "def transform_fn(m, d, c, a):\n    return 'from serve.py'\n",
            "code/helper.py": "",
        },
        environment={"SAGEMAKER_PROGRAM": "serve.py"},
    )
    response = await instance.invoke(request(b"", "text/csv"), timeout=30)
    assert response.body == b"from serve.py"


async def test_code_dir_is_importable_and_model_dir_holds_model_files(harness) -> None:
    instance = await harness.start_files(
        {
            "weights.txt": "42",
            "code/helper.py": "VALUE = 'helped'\n",
            "code/inference.py": """
                import os
                import helper

                def model_fn(model_dir):
                    return open(os.path.join(model_dir, "weights.txt")).read()

                def transform_fn(model, data, content_type, accept):
                    return helper.VALUE + " " + model
            """,
        }
    )
    response = await instance.invoke(request(b"", "text/csv"), timeout=30)
    assert response.body == b"helped 42"


async def test_bad_tarball_is_a_load_failure(harness) -> None:
    url = await harness.put("bad.tar.gz", b"this is not a tarball")
    with pytest.raises(ModelInvocationError) as caught:
        await harness.start(python_model(url))
    assert "is not a valid model.tar.gz" in caught.value.message


async def test_tarball_escaping_the_model_dir_is_refused(harness, tmp_path) -> None:
    url = await harness.put("evil.tar.gz", make_archive({"../../evil.py": "x = 1"}))
    with pytest.raises(ModelInvocationError) as caught:
        await harness.start(python_model(url))
    assert "escape" in caught.value.message
    assert not (tmp_path / "evil.py").exists()


async def test_missing_inference_py_is_a_load_failure(harness) -> None:
    with pytest.raises(ModelInvocationError) as caught:
        await harness.start_files({"model.bin": "weights"})
    assert "code/inference.py" in caught.value.message


async def test_missing_model_data_is_a_load_failure(harness) -> None:
    with pytest.raises(ModelInvocationError) as caught:
        await harness.start(python_model("s3://models/nothing-here.tar.gz"))
    assert "NoSuchKey" in caught.value.message


async def test_model_fn_raising_is_a_load_failure_with_its_message(harness) -> None:
    with pytest.raises(ModelInvocationError) as caught:
        await harness.start_files(
            {"code/inference.py": "def model_fn(model_dir):\n    raise OSError('no weights')\n"}
        )
    assert "model_fn failed: OSError: no weights" in caught.value.message


async def test_invocations_run_concurrently_up_to_max_concurrency(harness) -> None:
    instance = await harness.start_files({"code/inference.py": ECHO_HANDLERS}, concurrency=4)
    started = time.monotonic()
    responses = await asyncio.gather(
        *(instance.invoke(request(b"sleep 1", "text/plain"), timeout=30) for _ in range(4))
    )
    elapsed = time.monotonic() - started
    assert [r.body for r in responses] == [b"sleep 1"] * 4
    # Run one after another they would take 4 s; in parallel about 1 s.
    assert elapsed < 3.5


async def test_instance_process_crash_fails_in_flight_and_restarts(harness) -> None:
    instance = await harness.start_files({"code/inference.py": ECHO_HANDLERS})
    first_pid = instance.pid
    with pytest.raises(InstanceCrashed):
        await instance.invoke(request(b"crash", "text/plain"), timeout=30)
    response = await instance.invoke(request(b"again", "text/plain"), timeout=30)
    assert response.body == b"again"
    assert instance.pid != first_pid


async def test_killed_instance_process_is_restarted(harness) -> None:
    instance = await harness.start_files({"code/inference.py": ECHO_HANDLERS})
    os.kill(instance.pid, signal.SIGKILL)
    for _ in range(300):
        if instance.restarts:
            break
        await asyncio.sleep(0.05)
    assert instance.restarts == 1
    response = await instance.invoke(request(b"after kill", "text/plain"), timeout=30)
    assert response.body == b"after kill"


async def test_invocation_past_its_timeout_raises_timeout(harness) -> None:
    instance = await harness.start_files({"code/inference.py": ECHO_HANDLERS})
    with pytest.raises(TimeoutError):
        await instance.invoke(request(b"sleep 5", "text/plain"), timeout=1)


async def test_large_streamed_input_reaches_the_handler(harness) -> None:
    instance = await harness.start_files(
        {
            "code/inference.py": "def model_fn(d):\n    return 1\n"
            "def transform_fn(m, d, c, a):\n    return str(len(d))\n"
        }
    )

    async def stream():
        for _ in range(20):
            yield b"x" * (3 * 1024 * 1024)

    response = await instance.invoke(ModelRequest("i", stream(), "application/x-bin"), 60)
    assert response.body == str(60 * 1024 * 1024).encode()


def test_select_runtime_picks_python_for_framework_images(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    image = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1"
    model = {"PrimaryContainer": {"Image": image}}
    assert isinstance(select_runtime(model, None, settings), PythonRuntime)  # type: ignore[arg-type]


def test_select_runtime_picks_http_container_for_urls(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    model = {"PrimaryContainer": {"Image": "http://127.0.0.1:8080"}}
    assert isinstance(select_runtime(model, None, settings), HttpContainerRuntime)  # type: ignore[arg-type]
