"""MetadataStore contract: control-plane resources, every backend alike."""

from __future__ import annotations

import pytest

from sagequeue.ports import Resource, ResourceKind

from .conftest import Backend, Store

pytestmark = pytest.mark.anyio

MODEL = ResourceKind.MODEL
ENDPOINT = ResourceKind.ENDPOINT


def model(name: str = "My-Model", created_at: float = 1.0, **doc: object) -> Resource:
    document = {"ModelName": name, "PrimaryContainer": {"Image": "sagequeue/python"}, **doc}
    return Resource(MODEL, name, document, created_at=created_at)


async def test_created_resource_reads_back_with_its_document(store: Store) -> None:
    doc = {"ModelName": "m", "Tags": [{"Key": "k", "Value": "v"}], "Nested": {"n": 1.5}}
    assert await store.create_resource(Resource(MODEL, "m", doc, created_at=42.0))
    got = await store.get_resource(MODEL, "m")
    assert got is not None
    assert (got.kind, got.name, got.doc, got.version, got.created_at) == (MODEL, "m", doc, 0, 42.0)


async def test_get_resource_ignores_name_case_and_keeps_the_created_spelling(
    store: Store,
) -> None:
    await store.create_resource(model("My-Model"))
    got = await store.get_resource(MODEL, "my-model")
    assert got is not None and got.name == "My-Model"


async def test_get_unknown_resource_is_none(store: Store) -> None:
    assert await store.get_resource(MODEL, "nope") is None


async def test_create_with_a_name_differing_only_in_case_is_refused(store: Store) -> None:
    assert await store.create_resource(model("My-Model", Version="first"))
    assert not await store.create_resource(model("MY-MODEL", Version="second"))
    got = await store.get_resource(MODEL, "my-model")
    assert got is not None and got.doc["Version"] == "first"


async def test_same_name_may_exist_once_per_kind(store: Store) -> None:
    assert await store.create_resource(model("shared"))
    assert await store.create_resource(Resource(ENDPOINT, "shared", {"EndpointName": "shared"}))


async def test_list_resources_returns_one_kind_oldest_first(store: Store) -> None:
    await store.create_resource(model("b", created_at=2.0))
    await store.create_resource(model("a", created_at=3.0))
    await store.create_resource(model("c", created_at=1.0))
    await store.create_resource(Resource(ENDPOINT, "e", {}, created_at=0.5))
    listed = await store.list_resources(MODEL)
    assert [r.name for r in listed] == ["c", "b", "a"]


async def test_update_with_the_current_version_replaces_the_document(store: Store) -> None:
    await store.create_resource(model("m"))
    current = await store.get_resource(MODEL, "m")
    assert current is not None
    current.doc["Status"] = "InService"
    assert await store.update_resource(current)
    assert current.version == 1
    got = await store.get_resource(MODEL, "M")
    assert got is not None and (got.doc["Status"], got.version) == ("InService", 1)


async def test_update_with_a_stale_version_is_refused(store: Store) -> None:
    await store.create_resource(model("m"))
    first = await store.get_resource(MODEL, "m")
    second = await store.get_resource(MODEL, "m")
    assert first is not None and second is not None
    first.doc["Status"] = "first"
    second.doc["Status"] = "second"
    assert await store.update_resource(first)
    assert not await store.update_resource(second)
    got = await store.get_resource(MODEL, "m")
    assert got is not None and got.doc["Status"] == "first"


async def test_update_of_a_missing_resource_is_refused(store: Store) -> None:
    assert not await store.update_resource(model("ghost"))


async def test_delete_removes_the_resource_once(store: Store) -> None:
    await store.create_resource(model("m"))
    assert await store.delete_resource(MODEL, "M")
    assert await store.get_resource(MODEL, "m") is None
    assert not await store.delete_resource(MODEL, "m")


async def test_changing_a_returned_document_does_not_change_the_store(store: Store) -> None:
    await store.create_resource(model("m"))
    got = await store.get_resource(MODEL, "m")
    assert got is not None
    got.doc["ModelName"] = "changed"
    again = await store.get_resource(MODEL, "m")
    assert again is not None and again.doc["ModelName"] == "m"


async def test_resources_survive_close_and_reopen(durable_backend: Backend) -> None:
    store = await durable_backend.open()
    await store.create_resource(model("m"))
    current = await store.get_resource(MODEL, "m")
    assert current is not None
    current.doc["Status"] = "InService"
    await store.update_resource(current)
    await store.close()

    reopened = await durable_backend.open()

    got = await reopened.get_resource(MODEL, "m")
    assert got is not None and (got.doc["Status"], got.version) == ("InService", 1)
