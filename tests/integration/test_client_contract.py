"""The typed client (editaudit.client) against the server's OpenAPI schema: one method per operationId with the same
HTTP method, path template and query parameter names, and the other way round (a route added without a client
method fails here); every response TypedDict has exactly the schema's keys; the requests the methods really build
(through a mock transport) follow their declarations and send only body members the schema knows."""

from __future__ import annotations

import collections.abc
import hashlib
import inspect
import io
import json
import re
import types
import typing
from datetime import UTC, datetime

import httpx
import pytest

from editaudit.client import Client, operations
from editaudit.client import types as ct
from editaudit.contracts.statuses import TERMINAL, Status

METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture()
def schema(api_client) -> dict:
    return api_client.get("/openapi.json").json()


def server_operations(schema: dict) -> dict[str, tuple[str, str, set[str]]]:
    ops: dict[str, tuple[str, str, set[str]]] = {}
    for path, item in schema["paths"].items():
        for method, o in item.items():
            if method not in METHODS:
                continue
            assert o["operationId"] not in ops, f"operationId {o['operationId']} is used twice"
            query = {p["name"] for p in o.get("parameters", []) if p["in"] == "query"}
            ops[o["operationId"]] = (method.upper(), path, query)
    return ops


def test_every_operation_has_exactly_one_client_method_and_back(schema):
    server, client = server_operations(schema), operations(Client)
    assert sorted(set(server) - set(client)) == [], "operations without a client method (add one to Client)"
    assert sorted(set(client) - set(server)) == [], "client methods for operations the schema does not have"
    for op_id, (method, path, query) in server.items():
        op = client[op_id]
        assert (op.method, op.path, set(op.query)) == (method, path, query), op_id
        assert len(op.query) == len(set(op.query)), op_id
        signature = inspect.signature(getattr(Client, op_id))
        assert set(op.path_params) | set(op.query) <= set(signature.parameters), f"{op_id} takes every parameter"
    routes = [(op.method, op.path) for op in client.values()]
    assert len(routes) == len(set(routes)), "two client methods for one route"


def test_status_literal_matches_the_contract():
    assert set(typing.get_args(ct.Status)) == {s.value for s in Status}
    assert ct.TERMINAL_STATUSES == {s.value for s in TERMINAL}


# --- response and request types against the component schemas -------------------------------------------------------

def _resolve(schema: dict, node: dict) -> dict:
    """Follow $ref and drop the `null` member of an optional (anyOf [X, null])."""
    while True:
        if "$ref" in node:
            node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
        elif "anyOf" in node:
            real = [n for n in node["anyOf"] if n.get("type") != "null"]
            if len(real) != 1:
                return node
            node = real[0]
        else:
            return node


def _typeddict_in(ann) -> tuple[type | None, list[str]]:
    """The TypedDict inside an annotation (`X`, `X | None`, `list[X]`, `dict[str, X]`), and the schema keywords that
    lead to it (`items` through a list, `additionalProperties` through a dict)."""
    if typing.is_typeddict(ann) or typing.is_typeddict(typing.get_origin(ann)):
        return ann, []
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (typing.Union, types.UnionType):
        found = [_typeddict_in(a) for a in args if a is not type(None)]
        return next(((t, d) for t, d in found if t is not None), (None, []))
    if origin in (list, dict) and args:
        inner, path = _typeddict_in(args[-1])
        return inner, ["items" if origin is list else "additionalProperties", *path]
    return None, []


def check_keys(schema: dict, td, node: dict, where: str) -> None:
    node = _resolve(schema, node)
    if typing.get_origin(td) is ct.Page:  # Page[Item]: {items: [Item], next_cursor}
        assert set(node["properties"]) == {"items", "next_cursor"}, where
        check_keys(schema, typing.get_args(td)[0], node["properties"]["items"]["items"], f"{where}.items")
        return
    if "properties" not in node and node.get("additionalProperties", True) is True:
        return  # the schema leaves this object open (an edit's `progress`): the client's type is the refinement
    hints = typing.get_type_hints(td)
    assert set(hints) == set(node.get("properties", {})), f"{where}: {td.__name__} keys differ from the schema"
    for key, ann in hints.items():
        inner, path = _typeddict_in(ann)
        if inner is None:
            continue
        sub = _resolve(schema, node["properties"][key])
        for step in path:
            sub = _resolve(schema, sub[step])
        check_keys(schema, inner, sub, f"{where}.{key}")


def _json_response(o: dict) -> dict | None:
    for status, response in sorted(o["responses"].items()):
        if status.startswith("2") and "schema" in response.get("content", {}).get("application/json", {}):
            return response["content"]["application/json"]["schema"]
    return None


def test_response_types_have_the_schema_keys(schema):
    checked = 0
    for item in schema["paths"].values():
        for o in item.values():
            body = _json_response(o)
            returns = typing.get_type_hints(getattr(Client, o["operationId"]))["return"]
            if body is None or not body:  # a download or a text body; no body at all (204): None
                assert returns in (str, ct.Download) or (returns is type(None) and "204" in o["responses"]), \
                    o["operationId"]
                continue
            check_keys(schema, returns, body, o["operationId"])
            checked += 1
    assert checked >= 25


def test_the_edit_request_type_has_the_schema_keys(schema):
    props = schema["components"]["schemas"]["EditRequest"]["properties"]
    assert set(typing.get_type_hints(ct.EditRequest)) == set(props)
    required = set(schema["components"]["schemas"]["EditRequest"]["required"])
    assert ct.EditRequest.__required_keys__ == required


# --- the requests each method really builds --------------------------------------------------------------------------

SAMPLE = {"limit": 7, "version": 2, "created_after": datetime(2024, 1, 2, tzinfo=UTC), "status": "queued",
          "fmt": "md", "weights": b"\x00", "file": b"\x00", "spec": {"arch": "a"}, "body": {"model_id": "m"},
          "audit": {}, "policy": "default"}


def _arguments(fn) -> tuple[list, dict]:
    args, kwargs = [], {}
    hints = typing.get_type_hints(fn)
    for name, p in list(inspect.signature(fn).parameters.items())[1:]:
        value = io.BytesIO() if name == "dest" else SAMPLE.get(name, f"{name}-1")
        hint = hints[name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # `Mapping[...] | None`: the Mapping
            members = [a for a in typing.get_args(hint) if a is not type(None)]
            hint = members[0] if len(members) == 1 else hint
        if typing.get_origin(hint) is collections.abc.Mapping:
            value = {}  # create_policy's document (gate's `policy` is a name or a document: a name here)
        if p.kind is p.KEYWORD_ONLY:
            if name not in ("page_size", "filename"):
                kwargs[name] = value
        else:
            args.append(value)
    return args, kwargs


def test_each_method_sends_what_it_declares(schema):
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"{}", headers={
            "content-type": "application/json", "X-Content-SHA256": hashlib.sha256(b"{}").hexdigest()})

    http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(answer))
    client = Client("http://api.test", key="ea_test", http=http)
    for op_id, op in operations(Client).items():
        args, kwargs = _arguments(getattr(Client, op_id))
        getattr(client, op_id)(*args, **kwargs)
        r = seen.pop()
        pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(op.path))
        assert r.method == op.method and re.fullmatch(pattern, r.url.path), (op_id, r.method, r.url.path)
        assert set(r.url.params) == set(op.query), op_id  # every declared query parameter reaches the URL
        assert r.headers["authorization"] == "Bearer ea_test"
        if "idempotency_key" in kwargs:
            assert r.headers["idempotency-key"] == "idempotency_key-1", op_id
        body = schema["paths"][op.path][op.method.lower()].get("requestBody")
        if body and "application/json" in body["content"]:
            sent = json.loads(r.content)
            known = _resolve(schema, body["content"]["application/json"]["schema"])["properties"]
            assert set(sent) <= set(known), (op_id, set(sent) - set(known))

