"""Rule: no malformed id, path parameter, query parameter or body value gets a 500 from the REST API.

Property-based over the API's own OpenAPI schema (``/api/schema/``): every operation, every parameter
it declares (plus its request body's fields), filled with huge, negative, non-numeric, unicode and
bracketed values, as the operator (master key) and as a tenant admin. The answer may be any 2xx/3xx/4xx
(the right one is each endpoint's own test's business), never a server error. A deterministic sweep of
the worst values through every parameter comes first, so each one is hit whatever Hypothesis draws.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import DeploymentFactory, VirtualKeyFactory
from tests.support.api import client_for, master_client

pytestmark = pytest.mark.django_db

# Bounded so each role's run stays a few seconds even on a loaded 2-core machine.
MAX_EXAMPLES = 120

NASTY = [
    "0",
    "-1",
    "-0",
    "99999999999999999999999",
    "9223372036854775808",  # one past the largest bigint
    "1e3",
    "1.5",
    "0x10",
    "NaN",
    "abc",
    "[1]",
    "[",
    "]",
    "{}",
    "null",
    "true",
    "",
    " ",
    "\x00",
    "ü",
    "١٢",  # Arabic-Indic digits: str.isdigit() says yes, int() says yes too
    "２",  # a full-width digit
    "💥",
    "' OR 1=1--",
    "../",
    "http://[::1",  # urlsplit raises on it
    "http://h:99999",  # so does .port
    "a" * 300,
]
WORST_PATH = ["99999999999999999999999", "-1", "abc", "[", "١٢", "%"]
WORST_QUERY = ["99999999999999999999999", "١٢"]
WORST_BODY = [99999999999999999999999, "http://[::1"]
# Query parameters some list endpoints read but the schema does not declare (yet): fuzz them too.
UNDECLARED_QUERY = {"organization", "team", "user", "external_id", "model_name", "status", "model"}

text_values = st.one_of(
    st.sampled_from(NASTY),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(max_size=40),
)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        text_values,
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text_values, inner, max_size=3)),
    max_leaves=6,
)


def operations(schema: dict) -> list[dict]:
    """Every (method, path) with its path/query parameter names and its JSON body's field names."""
    components = schema.get("components", {}).get("schemas", {})
    found = []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            if method not in ("get", "post", "patch", "delete"):
                continue
            params = op.get("parameters", [])
            body_fields: list[str] = []
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            ref = body.get("$ref", "")
            if ref:
                body_fields = sorted(components.get(ref.rsplit("/", 1)[-1], {}).get("properties", {}))
            found.append(
                {
                    "method": method,
                    "path": path,
                    "path_params": [p["name"] for p in params if p["in"] == "path"],
                    "query_params": sorted(
                        {p["name"] for p in params if p["in"] == "query"}
                        | (UNDECLARED_QUERY if "{" not in path and method == "get" else set())
                    ),
                    "body_fields": body_fields,
                }
            )
    return found


def url_for(op: dict, path_values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: quote(path_values[m.group(1)], safe=""), op["path"])


def call(client, op: dict, url: str, query: dict, body: dict | None):
    if query:
        url += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query.items())
    method = getattr(client, op["method"])
    try:
        if op["method"] == "get":
            return method(url)
        return method(url, data=json.dumps(body or {}), content_type="application/json")
    except Exception as exc:  # the test client re-raises what would have been a 500: say which request
        raise AssertionError(f"{op['method'].upper()} {url} body={body!r}: {type(exc).__name__}: {exc}") from exc


def assert_no_server_error(response, op: dict, url: str, query: dict, body) -> None:
    assert response.status_code < 500, (op["method"].upper(), url, query, body, response.content[:500])


@pytest.fixture(params=["master key", "tenant admin"])
def client(request, alpha, alice, bob, olga, master_key):
    """Objects to aim at (a key, a deployment) and the caller: the operator, or Acme's organization admin."""
    VirtualKeyFactory(team=alpha, user=bob)
    DeploymentFactory(organization=alpha.organization)
    return master_client(master_key) if request.param == "master key" else client_for(olga)


@pytest.fixture
def ops(root) -> list[dict]:
    response = client_for(root).get("/api/schema/?format=json")
    assert response.status_code == 200
    found = operations(json.loads(response.content))
    assert len(found) > 30  # the schema really was read
    return found


def test_worst_values_in_every_parameter_are_never_a_server_error(request, client, ops):
    """Each path parameter, query parameter and body field on its own (one refusal can't hide another).

    Body fields only as the operator: a tenant admin's writes mostly stop at a 403/404 before the
    values matter, and the random part below still sends them bodies.
    """
    as_operator = request.node.callspec.params["client"] == "master key"
    for op in ops:
        valid_path = dict.fromkeys(op["path_params"], "1")
        cases = [(dict.fromkeys(op["path_params"], value), {}, None) for value in WORST_PATH if op["path_params"]]
        if op["method"] == "get":
            cases += [(valid_path, {name: value}, None) for name in op["query_params"] for value in WORST_QUERY]
        if as_operator:
            cases += [(valid_path, {}, {name: value}) for name in op["body_fields"] for value in WORST_BODY]
        for path_values, query, body in cases:
            url = url_for(op, path_values)
            assert_no_server_error(call(client, op, url, query, body), op, url, query, body)


def test_malformed_parameters_are_never_a_server_error(client, ops):
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,  # no example files written into the worktree; failures print their example
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(data=st.data())
    def run(data):
        op = data.draw(st.sampled_from(ops), label="operation")
        path_values = {name: data.draw(text_values, label=name) for name in op["path_params"]}
        query = {}
        if op["query_params"]:
            names = data.draw(st.lists(st.sampled_from(op["query_params"]), max_size=4, unique=True))
            query = {name: data.draw(text_values, label=name) for name in names}
        body = None
        if op["body_fields"]:
            names = data.draw(st.lists(st.sampled_from(op["body_fields"]), max_size=5, unique=True))
            body = {name: data.draw(json_values, label=name) for name in names}
        url = url_for(op, path_values)
        assert_no_server_error(call(client, op, url, query, body), op, url, query, body)

    run()
