"""The configuration store: repositories over PostgreSQL (psycopg 3 async pool).

Every statement that touches a tenant's row names `org_id` in its WHERE (or its INSERT values),
and that org id is always the caller's credential's, passed in by the API layer. Entities with a
`version` column use optimistic concurrency: an update/delete names the version it read, and a
row whose version moved on is a `VersionConflict` (the API answers 409).
"""

from app.store.base import (
    Conflict,
    NotFound,
    Store,
    StoreUnavailable,
    VersionConflict,
)

__all__ = ["Conflict", "NotFound", "Store", "StoreUnavailable", "VersionConflict"]
