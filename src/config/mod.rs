//! Configuration: parse (TOML + `ARD__SECTION__KEY` env overrides), validate
//! (structural checks, no device), and save the resolved config with the run.

mod load;
mod real;
mod types;
mod validate;

pub use load::{find_config, load, load_str, ENV_PREFIX};
pub use real::{parse_real, Real};
pub use types::*;
pub use validate::{uses_teacher, ValidationError};

impl Config {
    /// The resolved config as TOML, as saved into the run folder.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not render config: {e}\n"))
    }
}
