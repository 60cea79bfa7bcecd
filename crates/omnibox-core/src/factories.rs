//! Factories for the common outbox, inbox and dispatching processors.
