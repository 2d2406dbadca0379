-- A saved metric's unit and number format: how axes, tooltips and stat numbers show its
-- values. {"kind": "count" | "currency" | "percent" | "duration" | "bytes",
--  "currency": "EUR" (currency only), "base": "s" | "ms" (duration only)}; NULL = a plain count.
-- The API validates the shape (app/api/schemas.py, Unit); the CHECK keeps it an object.
ALTER TABLE metrics ADD COLUMN unit jsonb;
ALTER TABLE metrics
    ADD CONSTRAINT metrics_unit_is_object CHECK (unit IS NULL OR jsonb_typeof(unit) = 'object');
