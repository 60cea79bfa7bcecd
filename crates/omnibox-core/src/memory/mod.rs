//! In-memory store, transactions and broker: the reference implementation of every contract, used by unit tests and doctests.
