"""Schemathesis against /openapi.json: generated requests never get a server error."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from chronik.server.http import LiveQuery, create_http_app
from examples.shop.app import build_app

app = build_app("memory://")
http = create_http_app(
    app, queries=[LiveQuery("customer", "customer_summary", "customer_summary", ("customer_id",))]
)
schema = schemathesis.openapi.from_asgi("/openapi.json", http).exclude(
    path_regex="/stream$|/queries/"  # endless SSE streams are tested in test_http.py
)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_server_error(case: schemathesis.Case) -> None:
    """Whatever the generated request, the answer is never a 5xx and errors are problems."""
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"][0].startswith("application/problem+json")
