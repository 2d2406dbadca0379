-- Dashboard editing (docs/ui.md, "Editing a dashboard"): where each chart sits on the 12-column
-- grid, and who last changed a dashboard or a metric (a 409 names them: "Changed by alice@…").
-- `layout` NULL: a chart saved before the grid; the browser gives it a default place.
ALTER TABLE charts ADD COLUMN layout jsonb;
ALTER TABLE charts
    ADD CONSTRAINT charts_layout_object CHECK (layout IS NULL OR jsonb_typeof(layout) = 'object');

ALTER TABLE dashboards ADD COLUMN updated_by integer REFERENCES users(id) ON DELETE SET NULL;
ALTER TABLE metrics ADD COLUMN updated_by integer REFERENCES users(id) ON DELETE SET NULL;
