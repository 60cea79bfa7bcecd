//! The inbox consumer runner: consume, store under `(message_id, consumer_group)`, handle, acknowledge per strategy.
