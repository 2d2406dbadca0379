{#- Insert deduplication for the tables events_queue feeds (docs/ingest.md, "Exactly once from
    Kafka"). The embedded Kafka bridge tags every INSERT with an insert_deduplication_token
    derived from the topic-partition-offset range it holds, and re-inserts a range with the same
    token after a crash. A non-replicated MergeTree remembers no block at all unless
    non_replicated_deduplication_window > 0 (measured, chDB 26.9: the replay is stored twice
    without it, dropped in every table with it, the cascaded rollups included). Replicated tables
    keep their deduplication window (replicated_deduplication_window) by default, so the ALTER
    renders only where the engine macro gives a plain engine; a file that renders to nothing is
    not applied.

    Every table that the events_queue views write, directly or through another view, must be
    listed here: a table without a window counts a replayed range twice.

    10,000 blocks, the same as the replicated default: a replay is at most one bridge cycle (one
    INSERT per partition, each a few parts) behind, and inserts without a token (the WAL writer's
    INSERT ... SELECT) are not deduplicated at all (deduplicate_insert_select: not a stable
    SELECT), so the window is only ever spent on the bridge's own blocks and plain INSERTs. -#}
{%- for kind, table in [
    ('MergeTree', 'events'),
    ('AggregatingMergeTree', 'rollup_1s'),
    ('AggregatingMergeTree', 'rollup_1m'),
    ('AggregatingMergeTree', 'rollup_1h'),
    ('AggregatingMergeTree', 'rollup_1d'),
    ('AggregatingMergeTree', 'rollup_detail_1m'),
    ('AggregatingMergeTree', 'rollup_detail_1h'),
    ('AggregatingMergeTree', 'rollup_detail_1d'),
] %}
{%- if engine(kind, table) == kind %}
ALTER TABLE {{ db }}.{{ table }} {{ on_cluster }} MODIFY SETTING non_replicated_deduplication_window = 10000;
{%- endif %}
{%- endfor %}
