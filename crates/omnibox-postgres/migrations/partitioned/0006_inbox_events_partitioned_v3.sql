-- omnibox: extend the claim indexes with the claim's sort columns (table inbox_events_partitioned, version 3)
DROP INDEX IF EXISTS "public".idx_inbox_events_p_pending_fetch;
CREATE INDEX idx_inbox_events_p_pending_fetch ON "public"."inbox_events_partitioned" (scheduled_at, created_at, id) WHERE status = 'pending' AND locked_at IS NULL AND attempts_made < max_attempts;
