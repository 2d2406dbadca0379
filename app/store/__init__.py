"""The configuration store: `Store`, every repository over one PostgreSQL pool (psycopg 3, async;
connections, the breaker and the errors are in app/store/base.py).

Every statement that touches a tenant's row names `org_id` in its WHERE (or its INSERT values),
and that org id is always the caller's credential's, passed in by the API layer. Entities with a
`version` column use optimistic concurrency: an update/delete names the version it read, and a
row whose version moved on is a `VersionConflict` (the API answers 409).
"""

from psycopg_pool import AsyncConnectionPool

from app.store.alerts import AlertRepo
from app.store.annotations import AnnotationRepo
from app.store.base import Breaker, Conflict, NotFound, StoreUnavailable, VersionConflict
from app.store.channels import ChannelRepo, SilenceRepo
from app.store.dashboards import DashboardRepo
from app.store.metrics import MetricRepo
from app.store.orgs import ApiKeyRepo, OrgRepo, TokenRepo
from app.store.shares import ShareRepo


class Store:
    """Every repository, over one pool."""

    def __init__(
        self, pool: AsyncConnectionPool, timeout_s: float = 2.0, *, breaker_open_s: float = 2.0
    ):
        self.pool = pool
        self.breaker = Breaker(breaker_open_s)
        b = self.breaker
        self.dashboards = DashboardRepo(pool, timeout_s, b)
        self.metrics = MetricRepo(pool, timeout_s, b)
        self.alerts = AlertRepo(pool, timeout_s, b)
        self.channels = ChannelRepo(pool, timeout_s, b)
        self.silences = SilenceRepo(pool, timeout_s, b)
        self.api_keys = ApiKeyRepo(pool, timeout_s, b)
        self.orgs = OrgRepo(pool, timeout_s, b)
        self.tokens = TokenRepo(pool, timeout_s, b)
        self.annotations = AnnotationRepo(pool, timeout_s, b)
        self.shares = ShareRepo(pool, timeout_s, b)


__all__ = ["Conflict", "NotFound", "Store", "StoreUnavailable", "VersionConflict"]
