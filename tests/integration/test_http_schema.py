"""Schemathesis against /openapi.json: generated requests, valid and invalid, never get a server
error; answers conform to the document (status, content type, body schema); invalid input is
refused; methods a route lacks are 405 with Allow."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from chronik.server.http import LiveQuery, create_http_app
from chronik.server.http_retention import retention_routes
from examples.shop.app import build_app
from tests.conftest import SCALE

app = build_app("memory://")
http = create_http_app(
    app,
    queries=[LiveQuery("customer", "customer_summary", "customer_summary", ("customer_id",))],
    admin_writes=True,
    raw_append=True,  # POST /v1/dcb/append is fuzzed too
    extra_routes=retention_routes(),  # POST /v1/admin/streams/compact is fuzzed too
)
schema = schemathesis.openapi.from_asgi("/openapi.json", http).exclude(
    path_regex="/stream$|/queries/"  # endless SSE streams are tested in test_http.py
)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
]


@pytest.mark.drill
@schema.parametrize()
@settings(
    max_examples=40 * SCALE,
    derandomize=SCALE == 1,  # make test: the same cases every run; make soak: new ones
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_conform(case: schemathesis.Case) -> None:
    """Whatever the generated request: never a 5xx, a documented status and content type, a body
    of the documented schema, invalid input refused (4xx), errors as problem+json."""
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code < 500, (case.method, case.path, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"][0].startswith("application/problem+json")
