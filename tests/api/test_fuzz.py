"""An OpenAPI fuzz run (schemathesis) against the app: no 5xx, and every answer matches the schema.

Driven without schemathesis's pytest plugin (which does not support pytest 9 yet): each operation's
Hypothesis strategy is run directly, with a real key, against the app on real PostgreSQL.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.specs.openapi import checks as openapi_checks

FUZZ_CHECKS = [
    checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 30


def test_no_server_errors_and_schema_conformance(client, auth) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    calls: dict[str, int] = {}
    for result in schema.get_all_operations():
        _fuzz(result.ok(), auth, calls)()
    print(f"fuzz cases: {sum(calls.values())} over {len(calls)} operations")
    assert len(calls) >= 15 and sum(calls.values()) >= 15 * 5


def _fuzz(operation, auth: dict[str, str], calls: dict[str, int]):
    """The Hypothesis test of one operation (a factory, so each binds its own operation)."""

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def fuzz(case) -> None:
        calls[operation.label] = calls.get(operation.label, 0) + 1
        case.call_and_validate(headers=auth, checks=FUZZ_CHECKS)

    return fuzz
