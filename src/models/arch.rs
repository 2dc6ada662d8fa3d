//! Architecture names, the same in configs and on the command line:
//! `mobilenet_v2` (or `mobilenet_v2_x0.5` for a width multiplier), `resnet18`,
//! `wrn{depth}_{widen}` such as `wrn34_10`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A model in the zoo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arch {
    /// MobileNetV2 for CIFAR with a width multiplier (1.0 is the standard net).
    MobileNetV2 { width: f64 },
    /// ResNet-18 for CIFAR.
    ResNet18,
    /// WideResNet-depth-widen with TRADES parameter names; depth = 6n + 4.
    Wrn { depth: usize, widen: usize },
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::MobileNetV2 { width } if *width == 1.0 => write!(f, "mobilenet_v2"),
            Arch::MobileNetV2 { width } => write!(f, "mobilenet_v2_x{width}"),
            Arch::ResNet18 => write!(f, "resnet18"),
            Arch::Wrn { depth, widen } => write!(f, "wrn{depth}_{widen}"),
        }
    }
}

const KNOWN: &str =
    "known: mobilenet_v2, mobilenet_v2_xW (0 < W <= 4, e.g. mobilenet_v2_x0.5), resnet18, \
                     wrnD_K with D = 6n+4 (e.g. wrn34_10, wrn16_4, wrn10_1)";

impl FromStr for Arch {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("unknown architecture {name:?}: {why}; {KNOWN}");
        if name == "mobilenet_v2" {
            return Ok(Arch::MobileNetV2 { width: 1.0 });
        }
        if let Some(w) = name.strip_prefix("mobilenet_v2_x") {
            let width: f64 = w.parse().map_err(|_| bad("bad width multiplier"))?;
            if !(width > 0.0 && width <= 4.0) {
                return Err(bad("width multiplier out of range"));
            }
            return Ok(Arch::MobileNetV2 { width });
        }
        if name == "resnet18" {
            return Ok(Arch::ResNet18);
        }
        if let Some(rest) = name.strip_prefix("wrn") {
            let (d, k) = rest.split_once('_').ok_or_else(|| bad("expected wrnD_K"))?;
            let depth: usize = d.parse().map_err(|_| bad("bad depth"))?;
            let widen: usize = k.parse().map_err(|_| bad("bad widen factor"))?;
            if depth < 10 || !(depth - 4).is_multiple_of(6) {
                return Err(bad("depth must be 6n+4 with n >= 1"));
            }
            if widen == 0 || widen > 20 {
                return Err(bad("widen factor must be in 1..=20"));
            }
            return Ok(Arch::Wrn { depth, widen });
        }
        Err(bad("not in the zoo"))
    }
}

impl Serialize for Arch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Names as a JSON schema (the configuration reference): the spellings above.
impl schemars::JsonSchema for Arch {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Arch".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "x-type": "architecture",
            "oneOf": [
                { "const": "mobilenet_v2", "description": "MobileNetV2 for CIFAR" },
                {
                    "x-spelling": "mobilenet_v2_xW",
                    "pattern": "^mobilenet_v2_x[0-9.]+$",
                    "description": "MobileNetV2 with width multiplier W, 0 < W <= 4 (e.g. `mobilenet_v2_x0.5`)",
                },
                { "const": "resnet18", "description": "ResNet-18 for CIFAR" },
                {
                    "x-spelling": "wrnD_K",
                    "pattern": "^wrn[0-9]+_[0-9]+$",
                    "description": "WideResNet-D-K with TRADES parameter names, D = 6n+4, K from 1 to 20 (e.g. `wrn34_10`, `wrn16_2`)",
                },
            ],
        })
    }
}

impl<'de> Deserialize<'de> for Arch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "mobilenet_v2",
            "mobilenet_v2_x0.5",
            "resnet18",
            "wrn34_10",
            "wrn16_4",
            "wrn10_1",
        ] {
            assert_eq!(name.parse::<Arch>().unwrap().to_string(), name);
        }
    }

    #[test]
    fn rejects_unknown_names() {
        for name in [
            "mobilenet",
            "wrn35_10",
            "wrn34",
            "wrn34_0",
            "mobilenet_v2_x0",
            "resnet50",
            "",
        ] {
            let err = name.parse::<Arch>().unwrap_err();
            assert!(err.contains("known:"), "{err}");
        }
    }
}
