"""The wire format of `POST /v1/events`: one event in, the result out.

Every bound here is enforced by msgspec while decoding (in C), so a valid event costs no
Python-level checks beyond the timestamp window. docs/ingest.md lists the same limits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

# Event names: letters, digits and a few separators; they become a LowCardinality column
# and show up in metric text (`countIf(event = 'purchase')`), so keep them tame.
EVENT_NAME_PATTERN = r"^[A-Za-z0-9_$][A-Za-z0-9_.:/$ -]*$"
MAX_EVENT_NAME = 64
MAX_ID = 128  # user_id, session_id
MAX_URL = 2048  # path, referrer
MAX_USER_AGENT = 1024
MAX_IP = 45  # the longest textual IPv6 (with an embedded IPv4 tail)
MAX_PROPS = 50
MAX_PROP_KEY = 128
MAX_PROP_VALUE = 1024

EventName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_NAME, pattern=EVENT_NAME_PATTERN)
]
Identifier = Annotated[str, msgspec.Meta(max_length=MAX_ID)]
Url = Annotated[str, msgspec.Meta(max_length=MAX_URL)]
PropKey = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PROP_KEY)]
PropValue = Annotated[str, msgspec.Meta(max_length=MAX_PROP_VALUE)] | int | float | bool
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class EventIn(msgspec.Struct, forbid_unknown_fields=True):
    """One event as a client sends it. `null` means "not given" for every optional field.

    Unknown fields are rejected (a typo such as `userId` would otherwise silently lose
    data), and so is `org_id`: the API key decides the org.
    """

    event: EventName
    ts: int | AwareDatetime | None = None  # epoch milliseconds or RFC 3339 with an offset
    user_id: Identifier | int | None = None
    session_id: Identifier | int | None = None
    value: float | None = None
    path: Url | None = None
    referrer: Url | None = None
    props: Annotated[dict[PropKey, PropValue], msgspec.Meta(max_length=MAX_PROPS)] | None = None
    user_agent: Annotated[str, msgspec.Meta(max_length=MAX_USER_AGENT)] | None = None
    ip: Annotated[str, msgspec.Meta(max_length=MAX_IP)] | None = None
    # The event's identity for deduplication (docs/ingest.md, "Idempotency"); PostHog's SDKs
    # send it as `uuid`, Segment's (and RudderStack's) as `messageId`. '' means none.
    event_id: Identifier | None = None
    uuid: Identifier | None = None
    message_id: Identifier | None = msgspec.field(default=None, name="messageId")


class EventError(msgspec.Struct):
    """Why one event of a batch was rejected."""

    index: int  # position in the JSON array, or line number - 1 (0-based) in NDJSON
    code: str
    message: str
    field: str | None = None


class IngestResult(msgspec.Struct, omit_defaults=True):
    """The answer to a batch: how many events were stored, and why the others were not."""

    accepted: int
    rejected: int
    errors: list[EventError]
    # Of the accepted events, how many were not stored again because their id (event_id /
    # uuid / messageId, or one derived from the Idempotency-Key) was stored already.
    duplicates: int = 0
