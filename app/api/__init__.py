"""The HTTP API: health, dashboards, metrics, history, query, chart data, SQL, alerts, API keys,
limits."""

from app.api.admin import ApiKeyController, OrgController, me
from app.api.alert_channels import ChannelController, SilenceController
from app.api.alerts import AlertController
from app.api.annotations import AnnotationController
from app.api.charts import ChartDataController
from app.api.dashboards import DashboardController
from app.api.health import healthz, readyz
from app.api.metrics import MetricController, QueryController
from app.api.schema_browser import SchemaBrowserController
from app.api.shares import ShareAdminController, SharedDashboardController
from app.api.sql import SqlController
from app.api.tokens import TokenController

route_handlers = [
    healthz,
    readyz,
    me,
    DashboardController,
    MetricController,
    QueryController,
    AlertController,
    ChannelController,
    SilenceController,
    ApiKeyController,
    OrgController,
    TokenController,
    SqlController,
    ChartDataController,
    AnnotationController,
    ShareAdminController,
    SharedDashboardController,
    SchemaBrowserController,
]
