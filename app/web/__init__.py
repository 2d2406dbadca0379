"""The browser UI (issue 7): pages, static JS/CSS, ECharts, and the chart data the REST API
does not serve (funnel, heatmap, top-N). docs/ui.md describes it."""

from app.web.apidocs import swagger_asset
from app.web.data import ChartDataController
from app.web.pages import (
    alert_page,
    alerts_page,
    builder_page,
    dashboard_page,
    dashboards_page,
    echarts_js,
    login_page,
    static_router,
    tokens_page,
)

route_handlers = [
    login_page,
    dashboards_page,
    dashboard_page,
    builder_page,
    alerts_page,
    alert_page,
    tokens_page,
    echarts_js,
    swagger_asset,
    static_router,
    ChartDataController,
]
