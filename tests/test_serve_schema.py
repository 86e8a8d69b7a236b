"""A property-based run of the service's OpenAPI schema with schemathesis: no generated request gets a server
error (5xx) or an answer that the schema does not describe."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from serve_bundles import make_image_bundle, make_text_bundle

from medassist.serve import ServeConfig, create_app, load_served

_ROOT = Path(tempfile.mkdtemp(prefix="medassist-schema-"))
_APP = create_app(
    load_served([make_image_bundle(_ROOT / "xray"), make_text_bundle(_ROOT / "reports")]),
    ServeConfig(max_upload_mb=0.05, max_text_chars=2000),
)
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error(case) -> None:
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
    assert "Traceback" not in response.text
