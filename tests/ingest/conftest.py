"""Fixtures of the ingest tests: the live server of the browser tests (uvicorn on 127.0.0.1),
which the real tracking SDKs post to (tests/ingest/test_sdks.py)."""

from tests.web.conftest import server  # noqa: F401
