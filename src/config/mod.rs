//! Configuration: parse (TOML + `ARD__SECTION__KEY` env overrides), validate
//! (structural checks, no device), and save the resolved config with the run.

pub mod eval_attack;
mod load;
mod real;
mod types;
mod validate;

pub use eval_attack::{EvalAttack, KNOWN_EVALS};
pub use load::{defaults_with_env, find_config, load, load_str, ENV_PREFIX};
pub use real::{parse_real, Real};
pub use types::*;
pub use validate::{uses_teacher, ValidationError};

/// A setting's value as a config file spells it (`pgd`, `ard`, `"all"` as `all`).
pub fn spelled(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Null) => "unset".into(),
        Ok(v) => v.to_string(),
        Err(_) => "(unprintable)".into(),
    }
}

impl Config {
    /// The resolved config as TOML, as saved into the run folder.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not render config: {e}\n"))
    }
}
