//! A real number that may be written as a fraction in TOML: `0.031`, `8`, or `"8/255"`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A real-valued setting that accepts numbers and fraction strings like `"8/255"`.
///
/// The original text is kept so the resolved config shows what the user wrote.
#[derive(Clone, Copy, PartialEq)]
pub struct Real(pub f64);

impl Real {
    /// The value as f64.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl fmt::Debug for Real {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Real {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Parses `"0.5"`, `"8/255"`, `" 2 / 255 "`; rejects non-finite values and division by zero.
pub fn parse_real(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let value = match text.split_once('/') {
        Some((num, den)) => {
            let num: f64 = num
                .trim()
                .parse()
                .map_err(|_| format!("bad numerator in {text:?}"))?;
            let den: f64 = den
                .trim()
                .parse()
                .map_err(|_| format!("bad denominator in {text:?}"))?;
            if den == 0.0 {
                return Err(format!("division by zero in {text:?}"));
            }
            num / den
        }
        None => text
            .parse()
            .map_err(|_| format!("{text:?} is not a number or a fraction like \"8/255\""))?,
    };
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{text:?} is not finite"))
    }
}

impl schemars::JsonSchema for Real {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Real".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": ["number", "string"], "x-type": "real" })
    }
}

impl Serialize for Real {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0)
    }
}

impl<'de> Deserialize<'de> for Real {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Real;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a fraction string like \"8/255\"")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Real, E> {
                if v.is_finite() {
                    Ok(Real(v))
                } else {
                    Err(E::custom(format!("{v} is not a finite number")))
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Real, E> {
                Ok(Real(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Real, E> {
                Ok(Real(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Real, E> {
                parse_real(v).map(Real).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_and_fractions() {
        assert_eq!(parse_real("0.5").unwrap(), 0.5);
        assert!((parse_real("8/255").unwrap() - 8.0 / 255.0).abs() < 1e-15);
        assert!((parse_real(" 2 / 255 ").unwrap() - 2.0 / 255.0).abs() < 1e-15);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_real("8/0").is_err());
        assert!(parse_real("eight").is_err());
        assert!(parse_real("1/x").is_err());
        assert!(parse_real("inf").is_err());
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        for text in ["v = nan", "v = inf", "v = -inf"] {
            let e = toml::from_str::<std::collections::BTreeMap<String, Real>>(text).unwrap_err();
            assert!(e.to_string().contains("not a finite number"), "{text}: {e}");
        }
    }
}
