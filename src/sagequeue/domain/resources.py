"""Control-plane resources: ARNs, endpoint life-cycle states, and the documents that
Describe* returns. Pure: no I/O.

An endpoint document is DescribeEndpoint's output plus internal keys (never shown):

* ``_Deployment``: ``{"EndpointConfig": <config doc>, "Models": {name: <model doc>}}``,
  the snapshot taken at CreateEndpoint / UpdateEndpoint that the worker deploys;
* ``_Generation``: bumped on each Create / Update, so the worker sees a new deployment.
* ``_Serving``: ``{"Generation": n, "Deployment": {...}}``, the generation that takes the
  requests (absent while Creating). During an update the new generation starts beside it,
  and replaces it once it runs (sagequeue.domain.placement).
* ``_FailedGeneration``: a generation that could not start; the one before keeps serving.
"""

from __future__ import annotations

import enum
from typing import Any

from sagequeue.domain.errors import ValidationException
from sagequeue.ports import ResourceKind

INTERNAL_PREFIX = "_"
DEPLOYMENT_KEY = "_Deployment"
GENERATION_KEY = "_Generation"
SERVING_KEY = "_Serving"
FAILED_GENERATION_KEY = "_FailedGeneration"


class EndpointStatus(enum.StrEnum):
    OUT_OF_SERVICE = "OutOfService"
    CREATING = "Creating"
    UPDATING = "Updating"
    SYSTEM_UPDATING = "SystemUpdating"
    ROLLING_BACK = "RollingBack"
    IN_SERVICE = "InService"
    DELETING = "Deleting"
    FAILED = "Failed"
    UPDATE_ROLLBACK_FAILED = "UpdateRollbackFailed"


# Statuses in which SageMaker takes invocations: the previous deployment keeps serving
# while an update rolls out.
INVOCABLE_STATUSES = frozenset(
    {
        EndpointStatus.IN_SERVICE,
        EndpointStatus.UPDATING,
        EndpointStatus.SYSTEM_UPDATING,
        EndpointStatus.ROLLING_BACK,
    }
)
# Statuses in which UpdateEndpoint is refused ("Cannot update in-progress endpoint").
IN_PROGRESS_STATUSES = frozenset(
    {
        EndpointStatus.CREATING,
        EndpointStatus.UPDATING,
        EndpointStatus.SYSTEM_UPDATING,
        EndpointStatus.ROLLING_BACK,
        EndpointStatus.DELETING,
    }
)


def resource_arn(region: str, account_id: str, kind: ResourceKind, name: str) -> str:
    """SageMaker ARNs carry the name lower-cased."""
    return f"arn:aws:sagemaker:{region}:{account_id}:{kind.value}/{name.lower()}"


def public_view(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as Describe* shows it: without internal ``_`` keys."""
    return {k: v for k, v in doc.items() if not k.startswith(INTERNAL_PREFIX)}


def async_output_paths(endpoint_doc: dict[str, Any]) -> tuple[str, str | None]:
    """(S3OutputPath, S3FailurePath or None) of an endpoint's deployed config."""
    deployment = endpoint_doc.get(DEPLOYMENT_KEY) or {}
    config = deployment.get("EndpointConfig") or {}
    async_config = (
        config.get("AsyncInferenceConfig") or endpoint_doc.get("AsyncInferenceConfig") or {}
    )
    output = async_config.get("OutputConfig") or {}
    return output.get("S3OutputPath", ""), output.get("S3FailurePath")


def endpoint_production_variants(config_doc: dict[str, Any]) -> list[dict[str, Any]]:
    """DescribeEndpoint's ProductionVariants for a config about to be deployed: desired
    counts and weights from the config, nothing running yet."""
    variants = []
    for variant in config_doc.get("ProductionVariants", []):
        weight = float(variant.get("InitialVariantWeight", 1.0))
        count = int(variant.get("InitialInstanceCount", 1))
        variants.append(
            {
                "VariantName": variant["VariantName"],
                "CurrentWeight": weight,
                "DesiredWeight": weight,
                "CurrentInstanceCount": 0,
                "DesiredInstanceCount": count,
            }
        )
    return variants


def variant_names(config_doc: dict[str, Any]) -> list[str]:
    return [str(v["VariantName"]) for v in config_doc.get("ProductionVariants", [])]


def choose_variant(endpoint_doc: dict[str, Any], draw: float) -> str:
    """The production variant that serves a new request: by CurrentWeight, with
    ``draw`` uniform in [0, 1). All weights zero (or none given): the first variant."""
    variants = endpoint_doc.get("ProductionVariants") or []
    if not variants:
        return ""
    weights = [max(float(v.get("CurrentWeight", 1.0)), 0.0) for v in variants]
    total = sum(weights)
    if total <= 0:
        return str(variants[0]["VariantName"])
    point = draw * total
    for variant, weight in zip(variants, weights, strict=True):
        if point < weight:
            return str(variant["VariantName"])
        point -= weight
    return str(variants[-1]["VariantName"])


def apply_weights_and_capacities(
    variants: list[dict[str, Any]],
    desired: list[dict[str, Any]],
    *,
    endpoint_arn: str,
    config_name: str,
) -> list[dict[str, Any]]:
    """The endpoint's ProductionVariants after UpdateEndpointWeightsAndCapacities:
    each named variant takes its DesiredWeight (as CurrentWeight too: weights apply at
    once) and DesiredInstanceCount. Raises ValidationException, in SageMaker's words,
    for a variant named twice or not on the endpoint, a variant given neither value,
    and weights that would all be zero. ``variants`` is not changed."""
    known = {str(v["VariantName"]) for v in variants}
    seen: set[str] = set()
    unknown: list[str] = []
    for entry in desired:
        name = str(entry["VariantName"])
        if name in seen:
            raise ValidationException(
                f'The variant name "{name}" was non-unique within the request.'
            )
        seen.add(name)
        if name not in known:
            unknown.append(name)
    if unknown:
        raise ValidationException(
            f'The variant name(s) "{", ".join(unknown)}" is/are not present within endpoint '
            f'configuration "{config_name}".'
        )
    for entry in desired:
        if entry.get("ServerlessUpdateConfig"):
            raise ValidationException(
                "ServerlessUpdateConfig is not supported: asynchronous inference endpoints "
                "run on instances."
            )
        if entry.get("DesiredWeight") is None and entry.get("DesiredInstanceCount") is None:
            raise ValidationException(
                f"Either DesiredWeight or DesiredInstanceCount must be specified for the "
                f'variant "{entry["VariantName"]}".'
            )
    by_name: dict[str, dict[str, Any]] = {str(e["VariantName"]): e for e in desired}
    updated = []
    for described in variants:
        variant = dict(described)
        change = by_name.get(str(variant["VariantName"]))
        if change is not None:
            if change.get("DesiredWeight") is not None:
                weight = float(change["DesiredWeight"])
                if weight < 0:  # the wire model says so too (VariantWeight, min 0)
                    raise ValidationException(
                        f'The weight of the variant "{variant["VariantName"]}" must not be '
                        "negative."
                    )
                variant["CurrentWeight"] = weight
                variant["DesiredWeight"] = weight
            if change.get("DesiredInstanceCount") is not None:
                variant["DesiredInstanceCount"] = int(change["DesiredInstanceCount"])
        updated.append(variant)
    if all(float(v.get("CurrentWeight", 1.0)) <= 0 for v in updated):
        raise ValidationException(
            f'The sum of the variant weights of endpoint "{endpoint_arn}" must be greater '
            "than 0: at least one production variant needs a weight above 0."
        )
    return updated
