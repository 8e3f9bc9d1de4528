"""The SageMaker control plane (JSON 1.1, ``X-Amz-Target: SageMaker.<Action>``): models,
endpoint configs and endpoints, for asynchronous inference only.

``ControlPlane`` holds the operations (desired state in the MetadataStore; the worker
drives endpoints from Creating / Updating to InService or Failed). ``ControlApi`` is the
wire adapter. Inputs are validated against botocore's ``sagemaker`` model; errors and
messages are SageMaker's.
"""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Awaitable, Callable
from functools import cache, partial
from typing import Any, Protocol

import msgspec

from sagequeue.config import Settings
from sagequeue.domain.containers import (
    ContainerUrlError,
    check_container_host,
    is_container_image,
)
from sagequeue.domain.errors import (
    ServiceError,
    ServiceUnavailable,
    UnknownOperation,
    ValidationException,
)
from sagequeue.domain.notifications import topic_form_problem, topic_host_problem
from sagequeue.domain.placement import plan_endpoint, running_counts
from sagequeue.domain.resources import (
    DEPLOYMENT_KEY,
    FAILED_GENERATION_KEY,
    GENERATION_KEY,
    IN_PROGRESS_STATUSES,
    SERVING_KEY,
    EndpointStatus,
    apply_weights_and_capacities,
    endpoint_production_variants,
    public_view,
    resource_arn,
    variant_names,
)
from sagequeue.domain.validation import (
    ShapeValidator,
    member_path,
    raise_if_invalid,
    violation,
    wire_int,
)
from sagequeue.frontdoor.errors import WireProtocol
from sagequeue.frontdoor.http import Request, Response, json_response
from sagequeue.ports import FleetStore, MetadataStore, Resource, ResourceKind

_TARGET_PREFIX = "SageMaker."
_DEFAULT_MAX_RESULTS = 10
# Members that are request options, not part of the described resource.
_NOT_STORED = ("Tags",)
# Concurrent writers (several API processes) retry an optimistic update this often.
_UPDATE_ATTEMPTS = 20


class _AlreadyExists(ValidationException):
    """Create* of a name that exists (SageMaker answers ValidationException)."""


class SerializationException(ServiceError):
    code = "SerializationException"
    status = 400


@cache
def _validator(action: str) -> ShapeValidator:
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return ShapeValidator(
        model.operation_model(action).input_shape, overrides={"SnsTopicArn": _check_topic}
    )


def _check_topic(value: Any, path: str, out: list[str]) -> None:
    """Notification topics: an SNS topic ARN as the model says, or a webhook URL."""
    if not isinstance(value, str):
        out.append(violation(value, path, "Member must be a string"))
        return
    problem = topic_form_problem(value)
    if problem is not None:
        out.append(violation(value, path, problem))


_TOPIC_PATH = "asyncInferenceConfig.outputConfig.notificationConfig."


# The resource each action acts on (kind, name member), for key policies; List*
# actions act on no single resource ("*" in IAM).
_ACTION_RESOURCES = {
    "CreateModel": (ResourceKind.MODEL, "ModelName"),
    "DescribeModel": (ResourceKind.MODEL, "ModelName"),
    "DeleteModel": (ResourceKind.MODEL, "ModelName"),
    "CreateEndpointConfig": (ResourceKind.ENDPOINT_CONFIG, "EndpointConfigName"),
    "DescribeEndpointConfig": (ResourceKind.ENDPOINT_CONFIG, "EndpointConfigName"),
    "DeleteEndpointConfig": (ResourceKind.ENDPOINT_CONFIG, "EndpointConfigName"),
    "CreateEndpoint": (ResourceKind.ENDPOINT, "EndpointName"),
    "DescribeEndpoint": (ResourceKind.ENDPOINT, "EndpointName"),
    "UpdateEndpoint": (ResourceKind.ENDPOINT, "EndpointName"),
    "UpdateEndpointWeightsAndCapacities": (ResourceKind.ENDPOINT, "EndpointName"),
    "DeleteEndpoint": (ResourceKind.ENDPOINT, "EndpointName"),
}

_KIND_WORDS = {
    ResourceKind.MODEL: "model",
    ResourceKind.ENDPOINT_CONFIG: "endpoint configuration",
    ResourceKind.ENDPOINT: "endpoint",
}


class ControlStore(MetadataStore, FleetStore, Protocol):
    """Resources, and the fleet's instances for DescribeEndpoint's counts."""


class ControlPlane:
    """SageMaker control-plane operations on the metadata store."""

    def __init__(
        self,
        metadata: ControlStore,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = metadata
        self._settings = settings
        self._clock = clock
        self._actions: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "CreateModel": self.create_model,
            "DescribeModel": self.describe_model,
            "ListModels": self.list_models,
            "DeleteModel": self.delete_model,
            "CreateEndpointConfig": self.create_endpoint_config,
            "DescribeEndpointConfig": self.describe_endpoint_config,
            "ListEndpointConfigs": self.list_endpoint_configs,
            "DeleteEndpointConfig": self.delete_endpoint_config,
            "CreateEndpoint": self.create_endpoint,
            "DescribeEndpoint": self.describe_endpoint,
            "ListEndpoints": self.list_endpoints,
            "UpdateEndpoint": self.update_endpoint,
            "UpdateEndpointWeightsAndCapacities": self.update_endpoint_weights_and_capacities,
            "DeleteEndpoint": self.delete_endpoint,
        }

    @property
    def actions(self) -> list[str]:
        return list(self._actions)

    async def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run one action with its JSON input; returns its JSON output."""
        handler = self._actions.get(action)
        if handler is None:
            raise UnknownOperation(
                f"Operation {action} is not supported. Supported operations: "
                + ", ".join(self._actions)
                + "."
            )
        validator = _validator(action)
        raise_if_invalid(validator.validate(params), ValidationException)
        # Members the model does not define are dropped, never stored or echoed.
        return await handler(validator.prune(params))

    # ------------------------------------------------------------------ helpers

    def arn(self, kind: ResourceKind, name: str) -> str:
        return resource_arn(self._settings.region, self._settings.account_id, kind, name)

    def _not_found(self, kind: ResourceKind, name: str) -> ValidationException:
        return ValidationException(f'Could not find {_KIND_WORDS[kind]} "{self.arn(kind, name)}".')

    def _already_exists(self, kind: ResourceKind, name: str) -> ValidationException:
        return _AlreadyExists(
            f'Cannot create already existing {_KIND_WORDS[kind]} "{self.arn(kind, name)}".'
        )

    async def _require(self, kind: ResourceKind, name: str) -> Resource:
        resource = await self._store.get_resource(kind, name)
        if resource is None:
            raise self._not_found(kind, name)
        return resource

    async def _create(self, kind: ResourceKind, name: str, doc: dict[str, Any]) -> None:
        if not await self._store.create_resource(
            Resource(kind=kind, name=name, doc=doc, created_at=doc["CreationTime"])
        ):
            raise self._already_exists(kind, name)

    async def _list(
        self,
        kind: ResourceKind,
        params: dict[str, Any],
        name_key: str,
        summary: Callable[[dict[str, Any]], dict[str, Any]],
        list_key: str,
        status_key: str | None = None,
    ) -> dict[str, Any]:
        docs = [r.doc for r in await self._store.list_resources(kind)]
        contains = params.get("NameContains")
        if contains:
            docs = [d for d in docs if contains.lower() in d[name_key].lower()]
        for key, time_key, before in (
            ("CreationTimeBefore", "CreationTime", True),
            ("CreationTimeAfter", "CreationTime", False),
            ("LastModifiedTimeBefore", "LastModifiedTime", True),
            ("LastModifiedTimeAfter", "LastModifiedTime", False),
        ):
            bound = params.get(key)
            if bound is not None:
                limit = _epoch(bound, key)
                docs = [
                    d
                    for d in docs
                    if (d.get(time_key, 0) < limit if before else d.get(time_key, 0) > limit)
                ]
        status = params.get("StatusEquals")
        if status and status_key:
            docs = [d for d in docs if d.get(status_key) == status]
        sort_by = params.get("SortBy") or "CreationTime"
        descending = (params.get("SortOrder") or "Descending") == "Descending"
        if sort_by == "Name":
            docs.sort(key=lambda d: d[name_key], reverse=descending)
        else:
            docs.sort(key=lambda d: (d.get("CreationTime", 0), d[name_key]), reverse=descending)
        start = _decode_token(params.get("NextToken"))
        size = int(params.get("MaxResults") or _DEFAULT_MAX_RESULTS)
        page = docs[start : start + size]
        result: dict[str, Any] = {list_key: [summary(d) for d in page]}
        if start + size < len(docs):
            result["NextToken"] = _encode_token(start + size)
        return result

    # ------------------------------------------------------------------ models

    async def create_model(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["ModelName"]
        containers = params.get("Containers") or []
        if not params.get("PrimaryContainer") and not containers:
            raise ValidationException(
                "Either PrimaryContainer or Containers must be specified for a model."
            )
        for container in [params.get("PrimaryContainer") or {}, *containers]:
            image = container.get("Image")
            if isinstance(image, str) and is_container_image(image):
                try:
                    check_container_host(
                        image, self._settings.container_allow_hosts, self._settings.host
                    )
                except ContainerUrlError as exc:
                    raise ValidationException(str(exc)) from None
        doc = _stored_params(params)
        doc["ModelArn"] = self.arn(ResourceKind.MODEL, name)
        doc["CreationTime"] = self._clock()
        await self._create(ResourceKind.MODEL, name, doc)
        return {"ModelArn": doc["ModelArn"]}

    async def describe_model(self, params: dict[str, Any]) -> dict[str, Any]:
        return public_view((await self._require(ResourceKind.MODEL, params["ModelName"])).doc)

    async def list_models(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._list(
            ResourceKind.MODEL,
            params,
            "ModelName",
            lambda d: {
                "ModelName": d["ModelName"],
                "ModelArn": d["ModelArn"],
                "CreationTime": d["CreationTime"],
            },
            "Models",
        )

    async def delete_model(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["ModelName"]
        if not await self._store.delete_resource(ResourceKind.MODEL, name):
            raise self._not_found(ResourceKind.MODEL, name)
        return {}

    # ------------------------------------------------------------------ endpoint configs

    async def create_endpoint_config(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointConfigName"]
        async_config = params.get("AsyncInferenceConfig")
        if not async_config:
            raise ValidationException(
                "AsyncInferenceConfig is required: this service serves asynchronous "
                "inference endpoints only (InvokeEndpointAsync). Add AsyncInferenceConfig "
                "with OutputConfig.S3OutputPath to the endpoint configuration."
            )
        output = async_config.get("OutputConfig") or {}
        if not output.get("S3OutputPath"):
            raise ValidationException(
                "AsyncInferenceConfig.OutputConfig.S3OutputPath is required: results of "
                "asynchronous invocations are written there."
            )
        self._check_topic_hosts(output.get("NotificationConfig") or {})
        variants = params["ProductionVariants"]
        seen: set[str] = set()
        for variant in variants:
            variant_name = variant["VariantName"]
            if variant_name.lower() in seen:
                raise ValidationException(
                    f"Variant name {variant_name} is used more than once in the "
                    "endpoint configuration."
                )
            seen.add(variant_name.lower())
            if variant.get("ServerlessConfig"):
                raise ValidationException(
                    "ServerlessConfig is not supported with AsyncInferenceConfig."
                )
            model_name = variant.get("ModelName")
            if not model_name:
                raise ValidationException(
                    f"ModelName is required for production variant {variant_name}."
                )
            await self._require(ResourceKind.MODEL, model_name)
        doc = _stored_params(params)
        doc["EndpointConfigArn"] = self.arn(ResourceKind.ENDPOINT_CONFIG, name)
        doc["CreationTime"] = self._clock()
        await self._create(ResourceKind.ENDPOINT_CONFIG, name, doc)
        return {"EndpointConfigArn": doc["EndpointConfigArn"]}

    def _check_topic_hosts(self, notification: dict[str, Any]) -> None:
        """Webhook topics must name hosts the operator allows (SSRF)."""
        violations = []
        for member in ("SuccessTopic", "ErrorTopic"):
            topic = notification.get(member)
            if not topic:
                continue
            problem = topic_host_problem(
                topic, self._settings.notification_allow_hosts, self._settings.host
            )
            if problem is not None:
                violations.append(violation(topic, _TOPIC_PATH + member_path(member), problem))
        raise_if_invalid(violations, ValidationException)

    async def describe_endpoint_config(self, params: dict[str, Any]) -> dict[str, Any]:
        resource = await self._require(ResourceKind.ENDPOINT_CONFIG, params["EndpointConfigName"])
        return public_view(resource.doc)

    async def list_endpoint_configs(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._list(
            ResourceKind.ENDPOINT_CONFIG,
            params,
            "EndpointConfigName",
            lambda d: {
                "EndpointConfigName": d["EndpointConfigName"],
                "EndpointConfigArn": d["EndpointConfigArn"],
                "CreationTime": d["CreationTime"],
            },
            "EndpointConfigs",
        )

    async def delete_endpoint_config(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointConfigName"]
        if not await self._store.delete_resource(ResourceKind.ENDPOINT_CONFIG, name):
            raise self._not_found(ResourceKind.ENDPOINT_CONFIG, name)
        return {}

    # ------------------------------------------------------------------ endpoints

    async def _deployment(self, config_name: str) -> dict[str, Any]:
        """Snapshot of an endpoint config and its models, as the worker deploys it."""
        config = (await self._require(ResourceKind.ENDPOINT_CONFIG, config_name)).doc
        models: dict[str, Any] = {}
        for variant in config.get("ProductionVariants", []):
            model_name = variant["ModelName"]
            models[model_name] = (await self._require(ResourceKind.MODEL, model_name)).doc
        return {"EndpointConfig": copy.deepcopy(config), "Models": copy.deepcopy(models)}

    async def create_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointName"]
        arn = self.arn(ResourceKind.ENDPOINT, name)
        if await self._store.get_resource(ResourceKind.ENDPOINT, name) is not None:
            raise self._already_exists(ResourceKind.ENDPOINT, name)
        deployment = await self._deployment(params["EndpointConfigName"])
        config = deployment["EndpointConfig"]
        now = self._clock()
        doc: dict[str, Any] = {
            "EndpointName": name,
            "EndpointArn": arn,
            "EndpointConfigName": config["EndpointConfigName"],
            "ProductionVariants": endpoint_production_variants(config),
            "EndpointStatus": str(EndpointStatus.CREATING),
            "CreationTime": now,
            "LastModifiedTime": now,
            "AsyncInferenceConfig": config["AsyncInferenceConfig"],
            DEPLOYMENT_KEY: deployment,
            GENERATION_KEY: 1,
        }
        if params.get("DeploymentConfig"):
            doc["_DeploymentConfig"] = params["DeploymentConfig"]
        await self._create(ResourceKind.ENDPOINT, name, doc)
        return {"EndpointArn": arn}

    async def describe_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        doc = (await self._require(ResourceKind.ENDPOINT, params["EndpointName"])).doc
        described = public_view(doc)
        plan = plan_endpoint(doc, default_concurrency=1)
        if plan is not None:
            # Instances running in the whole fleet, from the shared store's claims.
            running = running_counts(plan, await self._store.list_instances(plan.key))
            for variant in described.get("ProductionVariants") or []:
                variant["CurrentInstanceCount"] = running.get(variant["VariantName"], 0)
        return described

    async def list_endpoints(self, params: dict[str, Any]) -> dict[str, Any]:
        return await self._list(
            ResourceKind.ENDPOINT,
            params,
            "EndpointName",
            lambda d: {
                "EndpointName": d["EndpointName"],
                "EndpointArn": d["EndpointArn"],
                "CreationTime": d["CreationTime"],
                "LastModifiedTime": d["LastModifiedTime"],
                "EndpointStatus": d["EndpointStatus"],
            },
            "Endpoints",
            status_key="EndpointStatus",
        )

    async def update_endpoint(
        self, params: dict[str, Any], *, force: bool = False
    ) -> dict[str, Any]:
        """Start rolling out a new endpoint config (status Updating). ``force`` (used by
        declarations at start) replaces a deployment that is still in progress."""
        name = params["EndpointName"]
        deployment = await self._deployment(params["EndpointConfigName"])
        for _ in range(_UPDATE_ATTEMPTS):
            resource = await self._require(ResourceKind.ENDPOINT, name)
            doc = resource.doc
            status = doc.get("EndpointStatus")
            if not force and status in IN_PROGRESS_STATUSES:
                raise ValidationException(
                    f'Cannot update in-progress endpoint "{self.arn(ResourceKind.ENDPOINT, name)}".'
                )
            new_config = deployment["EndpointConfig"]
            old_config = (doc.get(DEPLOYMENT_KEY) or {}).get("EndpointConfig") or {}
            nothing_serves = status in (EndpointStatus.CREATING, EndpointStatus.FAILED)
            if not nothing_serves and sorted(variant_names(new_config)) != sorted(
                variant_names(old_config)
            ):
                # Queued requests are bound to a variant: a config whose variants differ
                # would strand them.
                raise ValidationException(
                    "The production variants of endpoint configuration "
                    f"{new_config['EndpointConfigName']} ("
                    + ", ".join(variant_names(new_config))
                    + f") differ from those of the endpoint {name} ("
                    + ", ".join(variant_names(old_config))
                    + "). UpdateEndpoint needs the same variant names; create a new "
                    "endpoint for another set of variants."
                )
            new_doc = dict(doc)
            new_doc["EndpointStatus"] = str(EndpointStatus.UPDATING)
            new_doc["LastModifiedTime"] = self._clock()
            new_doc.pop("FailureReason", None)
            new_doc.pop(FAILED_GENERATION_KEY, None)
            if SERVING_KEY not in doc and status == EndpointStatus.IN_SERVICE:
                # Stored before deployments kept their serving generation.
                new_doc[SERVING_KEY] = {
                    "Generation": int(doc.get(GENERATION_KEY, 0)),
                    "Deployment": doc.get(DEPLOYMENT_KEY),
                }
            if nothing_serves:
                new_doc.pop(SERVING_KEY, None)
            new_doc[DEPLOYMENT_KEY] = deployment
            new_doc[GENERATION_KEY] = int(doc.get(GENERATION_KEY, 0)) + 1
            if nothing_serves:
                # Nothing was serving yet: the new config is simply what is being created.
                new_doc["EndpointStatus"] = str(EndpointStatus.CREATING)
                new_doc["EndpointConfigName"] = deployment["EndpointConfig"]["EndpointConfigName"]
                new_doc["ProductionVariants"] = endpoint_production_variants(
                    deployment["EndpointConfig"]
                )
            resource.doc = new_doc
            if await self._store.update_resource(resource):
                return {"EndpointArn": doc["EndpointArn"]}
        raise ServiceUnavailable(f"Endpoint {name} is being changed concurrently; retry.")

    async def update_endpoint_weights_and_capacities(
        self, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Change variants' weights (at once: the runtime API picks variants by
        CurrentWeight) and desired instance counts (placement starts or stops instances;
        the endpoint is Updating until the counts run, as on SageMaker)."""
        name = params["EndpointName"]
        arn = self.arn(ResourceKind.ENDPOINT, name)
        for _ in range(_UPDATE_ATTEMPTS):
            resource = await self._require(ResourceKind.ENDPOINT, name)
            doc = resource.doc
            status = doc.get("EndpointStatus")
            if status in IN_PROGRESS_STATUSES:
                raise ValidationException(f'Cannot update in-progress endpoint "{arn}".')
            if status != EndpointStatus.IN_SERVICE:
                raise ValidationException(
                    f'Cannot update endpoint "{arn}" in status {status}: only an InService '
                    "endpoint's weights and capacities can change."
                )
            variants = apply_weights_and_capacities(
                doc.get("ProductionVariants") or [],
                params["DesiredWeightsAndCapacities"],
                endpoint_arn=arn,
                config_name=str(doc.get("EndpointConfigName")),
            )
            new_doc = dict(doc)
            new_doc["ProductionVariants"] = variants
            new_doc["EndpointStatus"] = str(EndpointStatus.UPDATING)
            new_doc["LastModifiedTime"] = self._clock()
            new_doc.pop("FailureReason", None)
            if SERVING_KEY not in doc:
                # Stored before deployments kept their serving generation.
                new_doc[SERVING_KEY] = {
                    "Generation": int(doc.get(GENERATION_KEY, 0)),
                    "Deployment": doc.get(DEPLOYMENT_KEY),
                }
            resource.doc = new_doc
            if await self._store.update_resource(resource):
                return {"EndpointArn": doc["EndpointArn"]}
        raise ServiceUnavailable(f"Endpoint {name} is being changed concurrently; retry.")

    async def delete_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointName"]
        if not await self._store.delete_resource(ResourceKind.ENDPOINT, name):
            raise self._not_found(ResourceKind.ENDPOINT, name)
        return {}

    # ------------------------------------------------------------------ declarations

    async def apply_declarations(self, resources: dict[str, list[dict[str, Any]]]) -> None:
        """Make the store hold the config file's resources (SageMaker field names).

        Creates what is missing; a model or endpoint config that differs from the stored
        one is replaced; an endpoint whose config (or that config's models) changed is
        updated. Running it again with the same declarations changes nothing.
        """
        steps: list[Callable[[], Awaitable[None]]] = []
        for params in resources.get("Models") or []:
            steps.append(
                partial(self._declare, ResourceKind.MODEL, "ModelName", "CreateModel", params)
            )
        for params in resources.get("EndpointConfigs") or []:
            steps.append(
                partial(
                    self._declare,
                    ResourceKind.ENDPOINT_CONFIG,
                    "EndpointConfigName",
                    "CreateEndpointConfig",
                    params,
                )
            )
        for params in resources.get("Endpoints") or []:
            steps.append(partial(self._declare_endpoint, params))
        for step in steps:
            try:
                await step()
            except _AlreadyExists:
                # Another API process of the fleet, starting with the same config file,
                # created it between our look and our create: look again.
                await step()

    async def _declare(
        self, kind: ResourceKind, name_key: str, action: str, params: dict[str, Any]
    ) -> None:
        name = params.get(name_key)
        existing = await self._store.get_resource(kind, name) if isinstance(name, str) else None
        if existing is not None and isinstance(name, str):
            if _declared_part(existing.doc) == _stored_params(_validator(action).prune(params)):
                return
            # Check the new declaration before the old resource is dropped for it.
            raise_if_invalid(_validator(action).validate(params), ValidationException)
            await self._store.delete_resource(kind, name)
        await self.call(action, params)

    async def _declare_endpoint(self, params: dict[str, Any]) -> None:
        name = params.get("EndpointName")
        existing = (
            await self._store.get_resource(ResourceKind.ENDPOINT, name)
            if isinstance(name, str)
            else None
        )
        if existing is None:
            await self.call("CreateEndpoint", params)
            return
        raise_if_invalid(_validator("UpdateEndpoint").validate(params), ValidationException)
        desired = await self._deployment(params["EndpointConfigName"])
        if existing.doc.get(DEPLOYMENT_KEY) == desired:
            return
        await self.update_endpoint(params, force=True)


def _stored_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in params.items() if k not in _NOT_STORED}


def _declared_part(doc: dict[str, Any]) -> dict[str, Any]:
    """The members of a stored document that a declaration sets (ignores ARN / time)."""
    generated = {"ModelArn", "EndpointConfigArn", "CreationTime"}
    return {k: v for k, v in doc.items() if k not in generated and not k.startswith("_")}


def _epoch(value: Any, name: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        from datetime import datetime

        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise ValidationException(f"{name} must be a timestamp, not {value!r}.")


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_token(token: Any) -> int:
    if not token:
        return 0
    try:
        kind, _, value = base64.urlsafe_b64decode(str(token).encode()).decode().partition(":")
        if kind == "offset":
            return wire_int(value)
    except (ValueError, UnicodeDecodeError):
        pass
    raise ValidationException("The NextToken is invalid.")


class ControlApi:
    """JSON 1.1 wire adapter for the ControlPlane."""

    protocol = WireProtocol.JSON

    def __init__(
        self,
        get_control: Callable[[], ControlPlane | None],
        settings: Settings,
        *,
        max_body: int = 1024 * 1024,
    ) -> None:
        self._get_control = get_control
        self._settings = settings
        self.max_body = max_body
        self._decoder = msgspec.json.Decoder()
        self._encoder = msgspec.json.Encoder()

    def body_too_large(self) -> ServiceError:
        return ValidationException(
            f"Request body exceeds the maximum of {self.max_body} bytes (max_control_body)."
        )

    async def handle(self, request: Request) -> Response:
        target = request.headers.get("x-amz-target", "")
        if not target.startswith(_TARGET_PREFIX):
            raise UnknownOperation(f"Unknown target {target!r}: expected SageMaker.<Action>.")
        action = target[len(_TARGET_PREFIX) :]
        body = request.body or b""
        if body.strip():
            try:
                params = self._decoder.decode(body)
            except msgspec.DecodeError as exc:
                raise SerializationException(f"Request body is not valid JSON: {exc}") from None
            except RecursionError:
                raise SerializationException(
                    "Request body is nested too deeply to be read."
                ) from None
            if not isinstance(params, dict):
                raise SerializationException("Request body must be a JSON object.")
        else:
            params = {}
        if request.access is not None:
            request.authorize("sagemaker:" + action, self._resource(action, params))
        control = self._get_control()
        if control is None:
            raise ServiceUnavailable("The server is starting; retry shortly.")
        result = await control.call(action, params)
        return json_response(
            200, self._encoder.encode(result), [("x-amzn-requestid", request.request_id)]
        )

    def _resource(self, action: str, params: dict[str, Any]) -> str:
        """The ARN a key policy is evaluated against for this call."""
        kind_and_member = _ACTION_RESOURCES.get(action)
        if kind_and_member is None:
            return "*"
        kind, member = kind_and_member
        name = params.get(member)
        settings = self._settings
        return resource_arn(
            settings.region, settings.account_id, kind, name if isinstance(name, str) else "*"
        )
