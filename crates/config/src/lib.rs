//! The node configuration: one serde tree, layered defaults < TOML file < `RESTATE_*`
//! environment < command-line flags.
//!
//! Unknown keys are reported with a "did you mean" suggestion and keys renamed since older
//! Restate docs are mapped to their current names, so a typo never silently changes behaviour.

mod addresses;
mod legacy;
mod loader;
mod options;
mod secret;
mod unknown_keys;

pub use addresses::{AdvertisedAddress, parse_bind_address};
pub use loader::{
    CliOverrides, ConfigError, LoadRequest, LoadedConfig, load, validate_metadata_client, web_ui_folders,
};
pub use options::*;
pub use secret::SecretString;

#[cfg(test)]
mod loader_tests;
