-- omnibox: dead letters keep bodies and headers that text and jsonb cannot hold (table inbox_events_partitioned, version 4)
ALTER TABLE "public"."inbox_events_partitioned_dead_letters" ADD COLUMN IF NOT EXISTS body_bytes BYTEA, ADD COLUMN IF NOT EXISTS headers_text TEXT;
