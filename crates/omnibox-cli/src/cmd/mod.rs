//! One module per subcommand.

pub mod dead_letters;
pub mod events;
pub mod migrate;
pub mod relay;
pub mod status;
