"""`bearer_token`: the one reader of `Authorization: Bearer …` (HTTP auth and both push
transports)."""

import pytest

from app.credentials import bearer_token


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer cpt_abc", "cpt_abc"),
        ("bearer cpt_abc", "cpt_abc"),
        ("BEARER   cpt_abc  ", "cpt_abc"),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer    ", None),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearercpt_abc", None),
        ("Token cpt_abc", None),
    ],
)
def test_bearer_token(header, token):
    assert bearer_token(header) == token
