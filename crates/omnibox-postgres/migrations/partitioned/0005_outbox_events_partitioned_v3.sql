-- omnibox: extend the claim indexes with the claim's sort columns (table outbox_events_partitioned, version 3)
DROP INDEX IF EXISTS "public".idx_outbox_events_p_pending_fetch;
CREATE INDEX idx_outbox_events_p_pending_fetch ON "public"."outbox_events_partitioned" (scheduled_at, created_at, id) WHERE status = 'pending' AND locked_at IS NULL AND attempts_made < max_attempts;
DROP INDEX IF EXISTS "public".idx_outbox_events_p_pending_key_order;
CREATE INDEX idx_outbox_events_p_pending_key_order ON "public"."outbox_events_partitioned" (topic, partition_key, created_at, id) WHERE status = 'pending';
