//! Maintenance: stale-lease release and retention cleanup in batches.
