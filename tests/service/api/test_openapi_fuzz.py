"""Schemathesis against the app's own OpenAPI document: requests drawn from the schema (and, in its
negative mode, from outside it) never get a 5xx, and every response matches what the document
promises: status code, content type, headers and body schema.

The example count is bounded and derandomized so CI is fast and repeatable; for a longer hunt, run
`INITIUM_FUZZ_EXAMPLES=2000 .venv/bin/pytest tests/service/api/test_openapi_fuzz.py`.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import CheckContext, positive_data_acceptance
from schemathesis.core.failures import Failure

from initium.service.api.app import create_app
from initium.service.config import Settings

EXAMPLES = int(os.environ.get("INITIUM_FUZZ_EXAMPLES", "60"))


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> schemathesis.schemas.BaseSchema:
    # No worker is started (the ASGI app runs without its lifespan): submitted jobs stay queued, which
    # is all the API's own contract covers; a small parameter cap keeps accidental work small anyway.
    settings_ = Settings(data_dir=tmp_path_factory.mktemp("fuzz"), device="cpu", max_parameters=1_000_000)
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(settings_))


schema = schemathesis.pytest.from_fixture("api_schema")


def errors_name_the_field(ctx: CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> bool:
    """Every error is the one envelope with a message, and a 422 says which field (`loc`)."""
    if response.status_code < 400 or case.method.upper() == "HEAD":  # a HEAD answer has no body (RFC 9110 9.3.2)
        return True
    is_json = response.headers.get("content-type", [""])[0].startswith("application/json")
    error = response.json().get("error") if is_json else None
    label = case.operation.label
    if not isinstance(error, dict) or not error.get("type") or not error.get("message"):
        raise Failure(operation=label, title="Bare error", message=f"not the error envelope: {response.text[:300]}")
    if response.status_code == 422 and not error.get("loc"):
        raise Failure(operation=label, title="Unlocated error", message=f"422 without loc: {error['message']}")
    return True


@schema.parametrize()
@settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)  # fmt: skip
def test_api_honours_its_openapi_document(case: schemathesis.Case) -> None:
    # Schema-valid requests may still be refused by rules JSON Schema cannot state (a layer's shapes
    # must agree, a policy needs a preset or a rule), so a 4xx for positive data is not a failure;
    # everything else schemathesis checks is (5xx, undocumented status or content type, bodies and
    # headers that do not match their schema, schema-invalid data accepted).
    case.call_and_validate(excluded_checks=[positive_data_acceptance], additional_checks=[errors_name_the_field])
