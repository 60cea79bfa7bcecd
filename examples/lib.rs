//! Runnable omnibox scenarios: `cargo run -p omnibox-examples --example <name>`
//! (or `cargo xtask example <name>`, which starts the local services first).
