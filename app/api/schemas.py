"""Request and response bodies of the API (msgspec Structs; Litestar derives the OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Description = Annotated[str, Meta(max_length=2000)]
ChartType = Literal["line", "bar", "heatmap", "funnel", "stat"]
Granularity = Literal["auto", "1s", "1m", "1h", "1d"]
Range = Annotated[str, Meta(pattern=r"^[1-9][0-9]{0,4}[smhdw]$")]
Dimension = Annotated[str, Meta(pattern=r"^[a-z_]{1,32}(\.[A-Za-z0-9_.\-]{1,64})?$")]
Version = Annotated[int, Meta(ge=1)]


class Meta_(msgspec.Struct):
    """How an answer was produced."""

    stale: bool = False  # True: ClickHouse/PostgreSQL failed; this is the last cached answer
    age_s: float = 0.0  # age of the answer (0 when computed for this request)
    cached: bool = False  # answered from the hot cache
    table: str | None = None
    granularity: str | None = None
    granularity_s: int | None = None
    raw: bool | None = None
    reason: str | None = None
    time_from: int | None = None
    time_to: int | None = None
    comparison: str | None = None
    rows_read: int | None = None
    # outputs that are null in a bucket without a value (averages, quantiles, ratios): charts
    # draw gaps there and give them no rate basis ("per minute")
    gap_outputs: list[str] | None = None


# -- metrics -------------------------------------------------------------------------------


class Unit(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """How a metric's values read: axes, tooltips and stat numbers format them by `kind`.

    `percent` values are ratios (0.25 shows as 25%); `duration` values are in `base` units;
    `bytes` are bytes; `currency` needs its ISO 4217 `currency` code."""

    kind: Literal["count", "currency", "percent", "duration", "bytes"] = "count"
    currency: Annotated[str, Meta(pattern=r"^[A-Z]{3}$")] | None = None
    base: Literal["s", "ms"] | None = None

    def __post_init__(self) -> None:
        if (self.kind == "currency") != (self.currency is not None):
            raise ValueError(
                "`currency` (an ISO 4217 code such as EUR) goes with kind currency only"
            )
        if self.base is not None and self.kind != "duration":
            raise ValueError("`base` (s or ms) goes with kind duration only")


class MetricIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    # {"text": "SELECT count() AS views WHERE event = 'pageview'"} or the form builder's JSON
    definition: dict[str, Any]
    description: Description = ""
    version: Version | None = None  # alternative to If-Match on PUT
    unit: Unit | None = None  # None: a plain count


class Editor(msgspec.Struct):
    """Who last changed a dashboard or a metric (null: before this was recorded, or the user
    has since been removed)."""

    id: int
    email: str
    name: str


class MetricOut(msgspec.Struct):
    id: int
    name: str
    description: str
    definition: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime
    unit: Unit | None = None
    updated_by: Editor | None = None


# -- dashboards ----------------------------------------------------------------------------

GRID_COLUMNS = 12  # the dashboard grid's width in columns (docs/ui.md, "Editing a dashboard")
GRID_MAX_ROWS = 1000  # a bound on `y`, far below the charts a dashboard may hold
GRID_MAX_HEIGHT = 24  # rows of one chart (a row is 70 px)


class Layout(msgspec.Struct, forbid_unknown_fields=True):
    """Where a chart sits on the dashboard grid: column `x` and row `y` of its top-left cell,
    `w` columns wide and `h` rows high. Overlapping charts are accepted and pushed down."""

    x: Annotated[int, Meta(ge=0, lt=GRID_COLUMNS)]
    y: Annotated[int, Meta(ge=0, lt=GRID_MAX_ROWS)]
    w: Annotated[int, Meta(ge=1, le=GRID_COLUMNS)]
    h: Annotated[int, Meta(ge=1, le=GRID_MAX_HEIGHT)]

    def __post_init__(self) -> None:
        if self.x + self.w > GRID_COLUMNS:
            raise ValueError(f"x + w must be at most {GRID_COLUMNS} (the grid's columns)")


class ChartIn(msgspec.Struct, forbid_unknown_fields=True):
    chart_type: ChartType
    title: Annotated[str, Meta(max_length=200)] = ""
    metric_id: int | None = None  # a saved metric of this org ...
    metric_inline: dict[str, Any] | None = None  # ... or an inline definition (exactly one)
    granularity: Granularity = "auto"
    default_range: Range = "1h"
    dimension: Dimension | None = None
    comparison: dict[str, Any] | str | None = None  # "previous_period" or {"a": [...], "b": [...]}
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    layout: Layout | None = None  # None: the browser places it (reading order)


class ChartOut(msgspec.Struct):
    id: int
    position: int
    title: str
    chart_type: str
    metric_id: int | None
    metric_inline: dict[str, Any] | None
    granularity: str
    default_range: str
    dimension: str | None
    comparison: Any
    options: dict[str, Any]
    layout: Layout | None = None


class DashboardIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    description: Description = ""
    charts: Annotated[list[ChartIn], Meta(max_length=50)] = msgspec.field(default_factory=list)
    version: Version | None = None


class DashboardOut(msgspec.Struct):
    id: int
    name: str
    description: str
    version: int
    created_at: datetime
    updated_at: datetime
    charts: list[ChartOut]
    stale: bool = False  # served from cache because PostgreSQL is unavailable
    age_s: float = 0.0
    updated_by: Editor | None = None


class DashboardSummary(msgspec.Struct):
    id: int
    name: str
    description: str
    version: int
    created_at: datetime
    updated_at: datetime
    chart_count: int
    updated_by: Editor | None = None


# -- alerts --------------------------------------------------------------------------------


class AnomalyIn(msgspec.Struct, forbid_unknown_fields=True):
    """An anomaly alert's expected band (docs/alerts.md, "Anomaly alerts")."""

    baseline: Literal["week", "hour"] = "week"
    sensitivity: Annotated[float, Meta(gt=0, le=100)] = 4.0  # band half-width, robust sigmas
    recovery_sensitivity: Annotated[float, Meta(ge=0, le=100)] | None = None  # ≤ sensitivity
    direction: Literal["above", "below", "both"] = "both"
    min_band: Annotated[float, Meta(ge=0, le=1e15)] = 0.0  # least half-width, metric units


GroupBy = Annotated[list[Annotated[str, Meta(min_length=1, max_length=200)]], Meta(max_length=2)]


class AlertIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    for_seconds: Annotated[int, Meta(ge=1, le=86400)]
    comparator: Literal[">", ">=", "<", "<="] | None = None  # threshold alerts
    threshold: float | None = None  # threshold alerts
    kind: Literal["threshold", "anomaly"] = "threshold"
    metric_id: int | None = None
    metric_inline: dict[str, Any] | None = None
    filters: Annotated[list[dict[str, Any]], Meta(max_length=20)] = msgspec.field(
        default_factory=list
    )
    resolve_after_seconds: Annotated[int, Meta(ge=1, le=86400)] | None = None
    recovery_threshold: float | None = None  # resolve only once back beyond it (hysteresis)
    keep_firing_seconds: Annotated[int, Meta(ge=0, le=86400)] = 0
    anomaly: AnomalyIn | None = None  # anomaly alerts
    group_by: GroupBy = msgspec.field(default_factory=list)  # one machine per group value
    max_groups: Annotated[int, Meta(ge=1, le=100)] = 20
    severity: Literal["info", "warning", "critical"] = "warning"
    enabled: bool = True
    webhook_url: Annotated[str, Meta(max_length=2000)] | None = None
    version: Version | None = None
    # the org's notification channels this alert notifies (GET /alerts/channels)
    channel_ids: Annotated[list[int], Meta(max_length=20)] = msgspec.field(default_factory=list)


class SilenceBrief(msgspec.Struct):
    """The silence muting an alert's notifications now."""

    id: int
    ends_at: datetime
    reason: str
    metric_id: int | None  # set when the silence is on the alert's saved metric


class AlertOut(msgspec.Struct):
    id: int
    name: str
    metric_id: int | None
    metric_inline: dict[str, Any] | None
    filters: list[Any]
    comparator: str | None
    threshold: float | None
    for_seconds: int
    resolve_after_seconds: int | None
    severity: str
    enabled: bool
    webhook_url: str | None
    kind: str
    recovery_threshold: float | None
    keep_firing_seconds: int
    anomaly: dict[str, Any] | None
    group_by: list[str]
    max_groups: int
    state: str
    state_since: datetime | None
    last_value: float | None
    version: int
    created_at: datetime
    updated_at: datetime
    channel_ids: list[int] = msgspec.field(default_factory=list)
    silenced: SilenceBrief | None = None


class DeliveryOut(msgspec.Struct):
    """One attempt to deliver an event to one target (`attempt` 0: refused before sending)."""

    channel_id: int | None  # null: the alert's own webhook_url (or a deleted channel)
    channel_kind: Literal["webhook", "slack", "email"]
    channel_name: str
    attempt: int
    status: Literal["delivered", "failed", "refused"]
    response_code: int | None  # HTTP status, or the SMTP reply code
    error: str | None
    at: datetime


class AlertEventOut(msgspec.Struct):
    """One firing/resolved/no_data transition of an alert and its notifications."""

    id: int
    alert_id: int
    kind: Literal["firing", "resolved", "no_data"]
    value: float | None
    threshold: float
    at: datetime
    details: dict[str, Any]
    group_key: str | None  # a grouped alert's group: the JSON of its group-by values
    delivery: Literal["none", "pending", "delivered", "failed", "silenced"]
    delivery_attempts: int
    delivery_error: str | None
    delivered_at: datetime | None
    silenced_by: int | None = None  # the silence that muted it (null once that is deleted)
    deliveries: list[DeliveryOut] = msgspec.field(default_factory=list)


class AlertEventsOut(msgspec.Struct):
    events: list[AlertEventOut]
    next_before: int | None  # pass as `before` for the next (older) page; null on the last


# -- alert channels and silences --------------------------------------------------------------

HttpUrl = Annotated[str, Meta(min_length=1, max_length=2000)]
EmailAddress = Annotated[str, Meta(min_length=3, max_length=320)]


class WebhookChannelIn(msgspec.Struct, tag_field="kind", tag="webhook", forbid_unknown_fields=True):
    """A generic webhook: the alert event as JSON, signed (X-ClickPulse-Signature).
    `url` may be left out of an update to keep the stored one."""

    name: Name
    url: HttpUrl | None = None
    version: Version | None = None


class SlackChannelIn(msgspec.Struct, tag_field="kind", tag="slack", forbid_unknown_fields=True):
    """A Slack-compatible incoming webhook. `url` may be left out of an update."""

    name: Name
    url: HttpUrl | None = None
    version: Version | None = None


class EmailChannelIn(
    msgspec.Struct,
    tag_field="kind",
    tag="email",
    forbid_unknown_fields=True,
    rename={"from_": "from"},
):
    """Email over SMTP. `password` may be left out of an update to keep the stored one."""

    name: Name
    host: Annotated[str, Meta(min_length=1, max_length=253)]
    from_: EmailAddress
    to: Annotated[list[EmailAddress], Meta(min_length=1, max_length=20)]
    port: Annotated[int, Meta(ge=1, le=65535)] = 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    password: Annotated[str, Meta(max_length=500)] | None = None
    version: Version | None = None


ChannelIn = WebhookChannelIn | SlackChannelIn | EmailChannelIn


class ChannelOut(msgspec.Struct):
    """A channel without its secrets: a URL is shown as scheme://host/… (its path often
    holds a token), an SMTP password only as `has_password`."""

    id: int
    name: str
    kind: Literal["webhook", "slack", "email"]
    settings: dict[str, Any]
    alert_ids: list[int]
    version: int
    created_at: datetime
    updated_at: datetime
    secret: str | None = None  # the signing key: only in the answers to create and rotate


class SilenceIn(msgspec.Struct, forbid_unknown_fields=True):
    """Mute one alert (`alert_id`) or every alert of a saved metric (`metric_id`) until
    `until` (epoch seconds or ISO 8601), from `starts` (default: now)."""

    until: int | str
    reason: Annotated[str, Meta(min_length=1, max_length=500)]
    alert_id: int | None = None
    metric_id: int | None = None
    starts: int | str | None = None


class SilenceOut(msgspec.Struct):
    id: int
    alert_id: int | None
    metric_id: int | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime
    active: bool


# -- API keys, org ---------------------------------------------------------------------------


class ApiKeyIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(max_length=200)] = ""


class ApiKeyOut(msgspec.Struct):
    id: int
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None
    key: str | None = None  # only in the answer to POST, never again


class LimitsIn(msgspec.Struct, forbid_unknown_fields=True):
    rate_per_s: Annotated[float, Meta(gt=0)] | None = None
    burst: Annotated[int, Meta(gt=0)] | None = None
    # Upper bounds are the operator's ceilings (422 naming the ceiling), not schema bounds.
    concurrent_queries: Annotated[int, Meta(gt=0)] | None = None
    rows_per_minute: Annotated[int, Meta(gt=0)] | None = None


class LimitsOut(msgspec.Struct):
    overrides: dict[str, Any]  # what orgs.limits sets for this org
    effective: dict[str, Any]  # with the defaults filled in, clamped to the ceilings
    ceilings: dict[str, Any]  # the operator's ceilings: the most an override can take effect


class Me(msgspec.Struct):
    org_id: int
    user_id: int
    role: str


# -- data ----------------------------------------------------------------------------------


class QueryIn(msgspec.Struct, forbid_unknown_fields=True):
    """An ad-hoc metric (text or form JSON) with the same parameters as history."""

    definition: dict[str, Any]
    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    granularity: Granularity = "auto"
    filters: Annotated[list[dict[str, Any]], Meta(max_length=20)] = msgspec.field(
        default_factory=list
    )
    group_by: Dimension | None = None
    compare: dict[str, Any] | str | None = None


class SeriesOut(msgspec.Struct):
    columns: list[str]
    rows: list[list[Any]]
    meta: Meta_


class ChartData(msgspec.Struct):
    chart_id: int
    columns: list[str] = msgspec.field(default_factory=list)
    rows: list[list[Any]] = msgspec.field(default_factory=list)
    meta: Meta_ | None = None
    error: dict[str, Any] | None = None


class DashboardData(msgspec.Struct):
    dashboard_id: int
    charts: list[ChartData]
    stale: bool = False


class TokenIn(msgspec.Struct, forbid_unknown_fields=True):
    """A new user token: for the user `email`, who becomes (or stays) a member with `role`."""

    email: Annotated[str, Meta(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
    role: Literal["viewer", "analyst", "editor", "admin"]
    # Lifetime in days; default CLICKPULSE_TOKEN_TTL_DAYS. At most 3650.
    ttl_days: Annotated[int, Meta(ge=1, le=3650)] | None = None


class TokenOut(msgspec.Struct):
    id: int
    prefix: str
    email: str
    role: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    token: str | None = None  # only in the answer to POST, never again
