"""The scaled event stream: ingest → Kafka topic → `events_queue`.

`codec` (the topic's wire format), `producer` (`KafkaEventSink`, the writer when Kafka is
configured), `bridge` (`KafkaBridge`: topic → embedded chDB, exactly once), `inflight` (the
bridge's record of uncommitted ranges), `client` (shared librdkafka settings). Design:
docs/ingest.md, "Kafka".
"""

from app.ingest.kafka.bridge import (
    CRASH_AFTER_INSERT_ENV,
    CRASH_EXIT_CODE,
    KafkaBridge,
    bridge_insert_settings,
    consumer_lag,
)
from app.ingest.kafka.codec import decode_json_each_row, encode_json_each_row, split_by_org
from app.ingest.kafka.inflight import InflightFile, OffsetRange, ranges_text
from app.ingest.kafka.producer import KafkaDeliveryFailed, KafkaEventSink, producer_config

__all__ = [
    "CRASH_AFTER_INSERT_ENV",
    "CRASH_EXIT_CODE",
    "InflightFile",
    "KafkaBridge",
    "KafkaDeliveryFailed",
    "KafkaEventSink",
    "OffsetRange",
    "bridge_insert_settings",
    "consumer_lag",
    "decode_json_each_row",
    "encode_json_each_row",
    "producer_config",
    "ranges_text",
    "split_by_org",
]
