-- omnibox: create the outbox table (table outbox_events_partitioned, version 1)
CREATE TABLE "public"."outbox_events_partitioned" (
    id UUID NOT NULL,
    event_type VARCHAR(100) NOT NULL,
    payload JSONB NOT NULL,
    headers JSONB,
    trace_id VARCHAR(64),
    idempotency_key VARCHAR(128),
    correlation_id VARCHAR(64),
    causation_id VARCHAR(64),
    schema_version VARCHAR(50),
    status VARCHAR(20) NOT NULL,
    attempts_made INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    last_error VARCHAR(2000),
    scheduled_at TIMESTAMP WITH TIME ZONE NOT NULL,
    completed_at TIMESTAMP WITH TIME ZONE,
    locked_at TIMESTAMP WITH TIME ZONE,
    locked_by VARCHAR(255),
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT timezone('UTC', now()),
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT timezone('UTC', now()),
    aggregate_type VARCHAR(50) NOT NULL,
    aggregate_id UUID NOT NULL,
    topic VARCHAR(255) NOT NULL,
    partition_key VARCHAR(255) NOT NULL,
    PRIMARY KEY (created_at, id),
    CONSTRAINT ck_outbox_events_p_attempts_valid CHECK (attempts_made <= max_attempts),
    CONSTRAINT ck_outbox_events_p_completed_status_consistency CHECK ((status = 'completed' AND completed_at IS NOT NULL) OR (status <> 'completed' AND completed_at IS NULL)),
    CONSTRAINT ck_outbox_events_p_lock_consistency CHECK ((locked_at IS NULL AND locked_by IS NULL) OR (locked_at IS NOT NULL AND locked_by IS NOT NULL))
) PARTITION BY RANGE (created_at);
CREATE INDEX idx_outbox_events_p_pending_fetch ON "public"."outbox_events_partitioned" (scheduled_at) WHERE status = 'pending' AND locked_at IS NULL AND attempts_made < max_attempts;
CREATE INDEX idx_outbox_events_p_locked_at ON "public"."outbox_events_partitioned" (locked_at) WHERE locked_at IS NOT NULL;
CREATE INDEX idx_outbox_events_p_completed_cleanup ON "public"."outbox_events_partitioned" (completed_at) WHERE status = 'completed' AND completed_at IS NOT NULL;
CREATE UNIQUE INDEX idx_outbox_events_p_idempotency_key ON "public"."outbox_events_partitioned" (idempotency_key, created_at) WHERE idempotency_key IS NOT NULL;
CREATE INDEX idx_outbox_events_p_created_at ON "public"."outbox_events_partitioned" (created_at);
CREATE INDEX idx_outbox_events_p_updated_at ON "public"."outbox_events_partitioned" (updated_at);
CREATE INDEX idx_outbox_events_p_pending_key_order ON "public"."outbox_events_partitioned" (topic, partition_key, created_at) WHERE status = 'pending';
CREATE INDEX idx_outbox_events_p_id ON "public"."outbox_events_partitioned" (id);
CREATE TABLE "public"."outbox_events_partitioned_default" PARTITION OF "public"."outbox_events_partitioned" DEFAULT;
