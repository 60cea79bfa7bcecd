//! Tests of the inbox runner against the in-memory database, store and broker.

mod bugs;
mod lanes;
mod outcome_table;
mod runner;
mod support;
