"""The browser UI: HTML pages, static JS/CSS, ECharts (their chart data beyond history is JSON
API, app/api/charts.py). docs/ui.md describes it."""

from app.web.apidocs import swagger_asset
from app.web.pages import (
    alert_page,
    alerts_page,
    browser_module,
    builder_page,
    channels_page,
    dashboard_page,
    dashboards_page,
    echarts_js,
    gridstack_asset,
    login_page,
    shared_page,
    static_router,
    tokens_page,
)

route_handlers = [
    login_page,
    dashboards_page,
    dashboard_page,
    shared_page,
    builder_page,
    alerts_page,
    alert_page,
    channels_page,
    tokens_page,
    echarts_js,
    browser_module,
    gridstack_asset,
    swagger_asset,
    static_router,
]
