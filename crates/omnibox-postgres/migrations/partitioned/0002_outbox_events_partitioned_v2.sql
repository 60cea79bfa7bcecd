-- omnibox: create the dead-letter table (table outbox_events_partitioned, version 2)
CREATE TABLE "public"."outbox_events_partitioned_dead_letters" (
    id UUID PRIMARY KEY,
    event_id UUID,
    kind VARCHAR(10) NOT NULL,
    event_type VARCHAR(100),
    route VARCHAR(255),
    message_id VARCHAR(255),
    body TEXT NOT NULL,
    headers JSONB,
    error TEXT NOT NULL,
    fingerprint VARCHAR(32) NOT NULL GENERATED ALWAYS AS (md5(regexp_replace(error, '[0-9a-fA-F-]{8,}|[0-9]+', '#', 'g'))) STORED,
    attempts INTEGER NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT timezone('UTC', now())
);
CREATE INDEX idx_outbox_events_partitioned_dead_letters_fingerprint ON "public"."outbox_events_partitioned_dead_letters" (fingerprint);
CREATE INDEX idx_outbox_events_partitioned_dead_letters_event_id ON "public"."outbox_events_partitioned_dead_letters" (event_id);
