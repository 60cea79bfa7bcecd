//! Built-in steps.
