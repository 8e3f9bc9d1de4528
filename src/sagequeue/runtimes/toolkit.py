"""The SageMaker inference toolkit's handler conventions, run inside a model instance.

Mirrors aws/sagemaker-inference-toolkit: ``decoder.py`` / ``encoder.py`` (JSON, CSV, NPY),
``default_inference_handler.py`` and ``transformer.py`` (``model_fn``, ``input_fn``,
``predict_fn``, ``output_fn`` or ``transform_fn``; each may take a trailing ``context``).
This module is imported only in the model instance process.
"""

from __future__ import annotations

import importlib.util
import inspect
import io
import json
import os
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
ANY = "*/*"
UTF8_TYPES = (JSON, CSV)
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
INFERENCE_ID_HEADER = "X-Amzn-SageMaker-Inference-Id"


class ModelLoadError(Exception):
    """The model cannot be loaded; the message is the endpoint's FailureReason."""


class UnsupportedFormatError(Exception):
    def __init__(self, content_type: str | None) -> None:
        super().__init__(f"Content type {content_type} is not supported by this framework.")


def media_type(content_type: str | None) -> str | None:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower()


# ------------------------------------------------------------------ decoders / encoders
def _numpy() -> types.ModuleType:
    import numpy

    return numpy


def _json_to_numpy(string_like: str | bytes) -> Any:
    return _numpy().array(json.loads(string_like))


def _csv_to_numpy(string_like: str | bytes) -> Any:
    if isinstance(string_like, bytes):
        string_like = string_like.decode("utf-8")
    return _numpy().genfromtxt(io.StringIO(string_like), delimiter=",")


def _npy_to_numpy(npy_array: bytes) -> Any:
    return _numpy().load(io.BytesIO(npy_array), allow_pickle=True)


_DECODERS: dict[str, Callable[[Any], Any]] = {
    NPY: _npy_to_numpy,
    CSV: _csv_to_numpy,
    JSON: _json_to_numpy,
}


def decode(data: Any, content_type: str | None) -> Any:
    decoder = _DECODERS.get(media_type(content_type) or "")
    if decoder is None:
        raise UnsupportedFormatError(content_type)
    return decoder(data)


def _array_to_json(array_like: Any) -> str:
    def default(value: Any) -> Any:
        if hasattr(value, "tolist"):
            return value.tolist()
        return json.JSONEncoder().default(value)

    return json.dumps(array_like, default=default)


def _array_to_npy(array_like: Any) -> bytes:
    buffer = io.BytesIO()
    _numpy().save(buffer, array_like)
    return buffer.getvalue()


def _array_to_csv(array_like: Any) -> str:
    stream = io.StringIO()
    _numpy().savetxt(stream, array_like, delimiter=",", fmt="%s")
    return stream.getvalue()


_ENCODERS: dict[str, Callable[[Any], Any]] = {
    NPY: _array_to_npy,
    CSV: _array_to_csv,
    JSON: _array_to_json,
}


def encode(array_like: Any, content_type: str | None) -> Any:
    encoder = _ENCODERS.get(media_type(content_type) or "")
    if encoder is None:
        raise UnsupportedFormatError(content_type)
    return encoder(array_like)


# ----------------------------------------------------------------------------- context
class Context:
    """What a handler sees about its invocation (like the toolkit's MMS context).

    ``request_properties`` holds the request headers (Content-Type, Accept,
    X-Amzn-SageMaker-Custom-Attributes, X-Amzn-SageMaker-Inference-Id).
    A handler sets the response's custom attributes with
    ``context.set_response_custom_attributes("k=v")`` (or, as with the toolkit,
    ``context.set_response_header(0, "X-Amzn-SageMaker-Custom-Attributes", "k=v")``).
    """

    def __init__(
        self,
        model_dir: str,
        inference_id: str | None = None,
        content_type: str | None = None,
        accept: str | None = None,
        custom_attributes: str | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.inference_id = inference_id
        self.content_type = content_type
        self.accept = accept
        self.custom_attributes = custom_attributes
        self.system_properties: dict[str, Any] = {"model_dir": model_dir, "gpu_id": None}
        self.request_properties: dict[str, str] = {}
        for name, value in (
            ("Content-Type", content_type),
            ("Accept", accept),
            (CUSTOM_ATTRIBUTES_HEADER, custom_attributes),
            (INFERENCE_ID_HEADER, inference_id),
        ):
            if value is not None:
                self.request_properties[name] = value
        self.response_headers: dict[str, str] = {}

    @property
    def response_custom_attributes(self) -> str | None:
        return self.response_headers.get(CUSTOM_ATTRIBUTES_HEADER)

    def set_response_custom_attributes(self, value: str) -> None:
        self.response_headers[CUSTOM_ATTRIBUTES_HEADER] = value

    def get_request_header(self, idx: int, key: str) -> str | None:
        for name, value in self.request_properties.items():
            if name.lower() == key.lower():
                return value
        return None

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return dict(self.request_properties)

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        if key.lower() == CUSTOM_ATTRIBUTES_HEADER.lower():
            key = CUSTOM_ATTRIBUTES_HEADER
        self.response_headers[key] = value

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.response_headers["Content-Type"] = value


# ----------------------------------------------------------------------------- handler
def _default_model_fn(model_dir: str) -> Any:
    raise NotImplementedError(
        "Please provide a model_fn implementation. "
        "See documentation for model_fn at https://sagemaker.readthedocs.io/en/stable/"
    )


def _default_input_fn(input_data: Any, content_type: str | None) -> Any:
    return decode(input_data, content_type)


def _default_predict_fn(data: Any, model: Any) -> Any:
    # The framework containers (scikit-learn, XGBoost) call the model's predict.
    if hasattr(model, "predict"):
        return model.predict(data)
    if callable(model):
        return model(data)
    raise NotImplementedError(
        "Please provide a predict_fn implementation: the model has no predict method."
    )


def _default_output_fn(prediction: Any, accept: str | None) -> Any:
    return encode(prediction, accept)


def _call(func: Callable[..., Any], context: Context, *args: Any) -> Any:
    """Call a handler function, adding ``context`` when it takes one more argument."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return func(*args)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return func(*args)
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) == len(args) + 1:
        return func(*args, context)
    return func(*args)


def describe_exception(exc: BaseException) -> str:
    """The failure message for a handler exception: its type and message."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class Handler:
    """A user module's handler functions, with the toolkit's defaults for missing ones."""

    def __init__(self, model_dir: Path, code_dir: Path, program: str) -> None:
        self.model_dir = model_dir
        self.default_accept = os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or JSON
        module = self._import(code_dir, program)
        self.transform_fn = getattr(module, "transform_fn", None)
        self.input_fn = getattr(module, "input_fn", None) or _default_input_fn
        self.predict_fn = getattr(module, "predict_fn", None) or _default_predict_fn
        self.output_fn = getattr(module, "output_fn", None) or _default_output_fn
        if self.transform_fn is not None and any(
            hasattr(module, name) for name in ("input_fn", "predict_fn", "output_fn")
        ):
            raise ModelLoadError(
                f"{program} defines transform_fn together with input_fn, predict_fn or "
                "output_fn; define either transform_fn or the others"
            )
        model_fn = getattr(module, "model_fn", None) or _default_model_fn
        try:
            self.model = _call(model_fn, Context(str(model_dir)), str(model_dir))
        except Exception as exc:  # the user's model_fn: any failure is a load failure
            raise ModelLoadError(f"model_fn failed: {describe_exception(exc)}") from exc

    @staticmethod
    def _import(code_dir: Path, program: str) -> types.ModuleType:
        path = code_dir / program
        if not path.is_file():
            raise ModelLoadError(
                f"{program} not found: the model archive must hold code/{program} "
                "(or set SAGEMAKER_PROGRAM / SAGEMAKER_SUBMIT_DIRECTORY)"
            )
        if str(code_dir) not in sys.path:
            sys.path.insert(0, str(code_dir))
        name = path.stem
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ModelLoadError(f"cannot import {program}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # user code at import time
            raise ModelLoadError(f"importing {program} failed: {describe_exception(exc)}") from exc
        return module

    def invoke(self, body: bytes, context: Context) -> tuple[bytes, str | None, str | None]:
        """Run one invocation; returns (body, content type, response custom attributes)."""
        content_type = context.content_type
        accept = context.accept
        if not accept or accept == ANY:
            accept = self.default_accept
        data: bytes | str = body
        if media_type(content_type) in UTF8_TYPES:
            data = body.decode("utf-8")
        if self.transform_fn is not None:
            result = _call(self.transform_fn, context, self.model, data, content_type, accept)
        else:
            decoded = _call(self.input_fn, context, data, content_type)
            prediction = _call(self.predict_fn, context, decoded, self.model)
            result = _call(self.output_fn, context, prediction, accept)
        response_type: str | None = accept
        if isinstance(result, tuple):
            result, response_type = result[0], result[1]
        response_type = context.response_headers.get("Content-Type", response_type)
        return _to_bytes(result), response_type, context.response_custom_attributes


def _to_bytes(result: Any) -> bytes:
    if isinstance(result, bytes):
        return result
    if isinstance(result, bytearray | memoryview):
        return bytes(result)
    if isinstance(result, str):
        return result.encode("utf-8")
    raise TypeError(
        f"the handler returned {type(result).__name__}; output_fn / transform_fn must "
        "return bytes or str (or a (body, content_type) tuple)"
    )
