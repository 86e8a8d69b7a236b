"""A property-based run of the service's OpenAPI schema with schemathesis, with an API key (admin, so that every
route is reached): no generated request gets a server error (5xx) or an answer that the schema does not describe."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from serve_bundles import make_image_bundle, make_text_bundle

from medassist.serve import ServeConfig, create_app, load_served
from medassist.serve.auth import KeyRing, add_key, read_keys

_ROOT = Path(tempfile.mkdtemp(prefix="medassist-schema-"))
_KEY = add_key(_ROOT / "keys.txt", "schema-test", "admin")
_HEADERS = {"Authorization": f"Bearer {_KEY}"}
_APP = create_app(
    load_served([make_image_bundle(_ROOT / "xray"), make_text_bundle(_ROOT / "reports")]),
    ServeConfig(max_upload_mb=0.05, max_text_chars=2000),
    ring=KeyRing(read_keys(_ROOT / "keys.txt")),
)
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP, headers=_HEADERS)


OPERATIONS = {op.label: op for op in (result.ok() for result in schema.get_all_operations())}


# One test per API operation, each with its own id (schemathesis's own parametrize gives them all one id, which
# pytest-xdist would run once).
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_server_error(label: str) -> None:
    @given(case=OPERATIONS[label].as_strategy())
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        response = case.call(headers=_HEADERS)
        case.validate_response(response, checks=[not_a_server_error])
        assert "Traceback" not in response.text

    check()
