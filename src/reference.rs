//! The configuration reference (`docs/src/configuration-reference.md`),
//! generated from the config types rather than written by hand: their JSON
//! schemas (schemars) carry every key, its type, its default, the allowed
//! values of enums and, from the `///` comments, what each means. A test
//! regenerates the page and fails when the committed copy is stale or when a
//! key or value has no doc comment ([`undocumented`]).

use crate::config::Config;
use crate::sweep::SweepFile;
use serde_json::Value;
use std::fmt::Write as _;

/// The command that writes the page (named in the page and by the tests).
pub const REFRESH: &str =
    "target/release/ard-pipeline config-reference > docs/src/configuration-reference.md";

/// One file format: its schema and how the page introduces it.
struct Format {
    title: &'static str,
    intro: &'static str,
    schema: Value,
}

fn formats() -> [Format; 2] {
    [
        Format {
            title: "Run config (`--config FILE`)",
            intro: "What `ard-pipeline --config FILE` and most subcommands read. \
                    Every key is optional: a missing one takes its default.",
            schema: schemars::schema_for!(Config).to_value(),
        },
        Format {
            title: "Sweep file (`ard-pipeline sweep --config FILE`)",
            intro: "A run config to start from (`base`), how to execute the runs \
                    (`[sweep]`), and what changes between them (`[common]`, `[grid]`, \
                    `[[rows]]`, whose keys are the dotted keys of the run config above).",
            schema: schemars::schema_for!(SweepFile).to_value(),
        },
    ]
}

/// One settable key (a leaf of the schema).
struct Key {
    path: String,
    kind: String,
    default: String,
    meaning: String,
}

/// One table of keys: a section (`[attack]`) or the file's top level.
struct Section {
    path: String,
    about: String,
    keys: Vec<Key>,
}

/// The whole page, Markdown.
pub fn page() -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "# Configuration reference\n\n\
         <!-- Generated from the config types (src/config/types.rs, src/sweep/spec.rs) by\n     \
         {REFRESH}\n     \
         Do not edit: change the doc comments and run that command. -->\n\n\
         Every key of the two TOML files the program reads, with its type, its default \
         and what it does, taken from the code. Unknown keys are refused with their name \
         and line. Types: *real* is a number or a fraction written as a string \
         (`eps = \"8/255\"`); *unset* means the key is absent (a setting that is off, or \
         chosen as its text says). Any run-config key can be overridden from the \
         environment: `ARD__ATTACK__STEPS=2` sets `attack.steps` \
         ([Configuration](configuration.md)).\n"
    );
    for format in formats() {
        let _ = write!(out, "\n## {}\n\n{}\n", format.title, format.intro);
        for section in sections(&format.schema) {
            render_section(&mut out, &section);
        }
    }
    out
}

fn render_section(out: &mut String, section: &Section) {
    let heading = if section.path.is_empty() {
        "Top level".to_string()
    } else {
        format!("`[{}]`", section.path)
    };
    let _ = write!(out, "\n### {heading}\n\n");
    if !section.about.is_empty() {
        let _ = write!(out, "{}\n\n", section.about);
    }
    out.push_str("| key | type | default | meaning |\n| --- | --- | --- | --- |\n");
    for key in &section.keys {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            key.path,
            cell(&key.kind),
            cell(&key.default),
            cell(&key.meaning)
        );
    }
}

/// Every key and enum value of both file formats that has no doc comment
/// (dotted paths; a value as `path = "value"`); empty when all are documented.
pub fn undocumented() -> Vec<String> {
    formats()
        .iter()
        .flat_map(|f| undocumented_in(&f.schema))
        .collect()
}

/// [`undocumented`] for one schema.
pub fn undocumented_in(schema: &Value) -> Vec<String> {
    let defs = schema.get("$defs").cloned().unwrap_or_default();
    let mut missing = Vec::new();
    walk(schema, &defs, "", &mut |v| {
        let doc = if v.is_section() {
            text(v.resolved, "description").or_else(|| text(v.prop, "description"))
        } else {
            text(v.prop, "description")
        };
        if doc.is_none() {
            missing.push(v.path.to_string());
        }
        if !v.is_section() {
            for (value, meaning) in values(&defs, v.resolved) {
                if meaning.is_empty() {
                    missing.push(format!("{} = {value}", v.path));
                }
            }
        }
    });
    missing
}

/// One property met by [`walk`].
struct Visit<'a> {
    /// Dotted key (`optim.schedule.kind`).
    path: &'a str,
    /// The property's own schema (field doc, default).
    prop: &'a Value,
    /// Its type's schema, `$ref` followed and `null` removed.
    resolved: &'a Value,
    /// The key must be given (no default).
    required: bool,
}

impl Visit<'_> {
    fn is_section(&self) -> bool {
        self.resolved.get("properties").is_some()
    }
}

/// Calls `visit` for every property of `schema`, depth first, each section
/// before its keys.
fn walk(schema: &Value, defs: &Value, prefix: &str, visit: &mut dyn FnMut(&Visit)) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required = schema.get("required").and_then(Value::as_array);
    for (name, prop) in props {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let resolved = non_null(defs, prop);
        let v = Visit {
            path: &path,
            prop,
            resolved: &resolved,
            required: required.is_some_and(|r| r.contains(&Value::from(name.as_str()))),
        };
        visit(&v);
        if v.is_section() {
            walk(&resolved, defs, &path, visit);
        }
    }
}

/// The tables of one schema: its top-level keys, then each section in key order.
fn sections(schema: &Value) -> Vec<Section> {
    let defs = schema.get("$defs").cloned().unwrap_or_default();
    let mut all = vec![Section {
        path: String::new(),
        about: String::new(),
        keys: Vec::new(),
    }];
    walk(schema, &defs, "", &mut |v| {
        if v.is_section() {
            let about = text(v.resolved, "description").unwrap_or_default();
            let own = format!("`[{}]`: ", v.path);
            all.push(Section {
                path: v.path.to_string(),
                about: capitalized(about.strip_prefix(&own).unwrap_or(&about)),
                keys: Vec::new(),
            });
            return;
        }
        let parent = v.path.rsplit_once('.').map_or("", |(p, _)| p);
        let key = leaf(&defs, v);
        if let Some(section) = all.iter_mut().rev().find(|s| s.path == parent) {
            section.keys.push(key);
        }
    });
    all.retain(|s| !s.keys.is_empty());
    all
}

fn leaf(defs: &Value, v: &Visit) -> Key {
    let mut meaning = text(v.prop, "description").unwrap_or_default();
    let listed = values(defs, v.resolved);
    if !listed.is_empty() {
        let items: Vec<String> = listed
            .iter()
            .map(|(v, m)| match m.trim_end_matches('.') {
                "" => v.clone(),
                m => format!("{v}: {m}"),
            })
            .collect();
        let _ = write!(meaning, " Values: {}.", items.join("; "));
    }
    let default = match v.prop.get("default") {
        Some(value) => toml_value(value),
        None if v.required => "(required)".into(),
        None => "unset".into(),
    };
    Key {
        path: v.path.to_string(),
        kind: kind(v.resolved, nullable(defs, v.prop)),
        default,
        meaning: meaning.trim().to_string(),
    }
}

/// The schema of `prop` with `$ref`s followed and the `null` of an `Option` removed.
fn non_null(defs: &Value, prop: &Value) -> Value {
    let prop = resolve(defs, prop);
    if let Some(any) = prop.get("anyOf").and_then(Value::as_array) {
        if let Some(inner) = any.iter().find(|s| s.get("type") != Some(&"null".into())) {
            return resolve(defs, inner);
        }
    }
    prop
}

/// `prop` with a `$ref` replaced by its definition; the property's own
/// keywords (its default) are added where the definition has none, so a
/// section keeps its struct's doc.
fn resolve(defs: &Value, prop: &Value) -> Value {
    let Some(name) = prop
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
    else {
        return prop.clone();
    };
    let mut target = defs.get(name).cloned().unwrap_or_default();
    if let (Some(t), Some(p)) = (target.as_object_mut(), prop.as_object()) {
        for (k, v) in p.iter().filter(|(k, _)| *k != "$ref") {
            t.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    target
}

fn nullable(defs: &Value, prop: &Value) -> bool {
    let prop = resolve(defs, prop);
    let null: Value = "null".into();
    let in_types = prop
        .get("type")
        .and_then(Value::as_array)
        .is_some_and(|t| t.contains(&null));
    let in_any = prop
        .get("anyOf")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|s| s.get("type") == Some(&null)));
    in_types || in_any
}

/// The allowed values of an enum-like schema, each with its meaning.
fn values(defs: &Value, schema: &Value) -> Vec<(String, String)> {
    if let Some(list) = schema.get("enum").and_then(Value::as_array) {
        return list.iter().map(|v| (spelled(v), String::new())).collect();
    }
    let Some(options) = schema.get("oneOf").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for option in options.iter().map(|o| resolve(defs, o)) {
        let meaning = text(&option, "description").unwrap_or_default();
        if let Some(v) = option.get("const") {
            out.push((spelled(v), meaning));
        } else if let Some(list) = option.get("enum").and_then(Value::as_array) {
            out.extend(list.iter().map(|v| (spelled(v), meaning.clone())));
        } else if let Some(s) = option.get("x-spelling").and_then(Value::as_str) {
            out.push((format!("`{s}`"), meaning));
        } else if option.get("type") == Some(&"integer".into()) {
            let bound = |k: &str| option.get(k).map_or("?".into(), Value::to_string);
            let range = format!("{} to {}", bound("minimum"), bound("maximum"));
            out.push((format!("an integer K from {range}"), meaning));
        }
    }
    out
}

/// A value as a config file writes it, in backticks.
fn spelled(v: &Value) -> String {
    format!("`{}`", toml_value(v).trim_matches('`'))
}

/// The type column: a custom type's own name, else the JSON type.
fn kind(schema: &Value, optional: bool) -> String {
    let base = if let Some(custom) = schema.get("x-type").and_then(Value::as_str) {
        custom.to_string()
    } else if !values(&Value::Null, schema).is_empty() {
        "string".into()
    } else {
        json_type(schema)
    };
    if optional {
        format!("{base}, optional")
    } else {
        base
    }
}

fn json_type(schema: &Value) -> String {
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let named: Vec<String> = types
        .iter()
        .filter(|t| **t != "null")
        .map(|t| match *t {
            "array" => {
                let item = schema.get("items").map_or("value".into(), json_type);
                format!("list of {item}")
            }
            "object" => "table".into(),
            "boolean" => "bool".into(),
            other => other.to_string(),
        })
        .collect();
    if named.is_empty() {
        "value".into()
    } else {
        named.join(" or ")
    }
}

/// A default in TOML spelling, in backticks (`unset` for an absent value).
fn toml_value(v: &Value) -> String {
    let plain = match v {
        Value::Null => return "unset".into(),
        Value::Number(n) => n.as_f64().map_or(n.to_string(), number),
        Value::Array(items) => {
            let inner: Vec<String> = items
                .iter()
                .map(|i| toml_value(i).trim_matches('`').to_string())
                .collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) if map.is_empty() => "{}".into(),
        other => other.to_string(),
    };
    format!("`{plain}`")
}

/// A number as written in the configs: integers plain, a fraction with a
/// small denominator as one (`8/255`), else at most 6 significant digits.
fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        return format!("{x}");
    }
    let short = format!("{x}");
    if short.len() <= 8 {
        return short;
    }
    for den in [3.0, 6.0, 255.0] {
        let num = x * den;
        if (num - num.round()).abs() < 1e-9 {
            return format!("\"{}/{}\"", num.round(), den);
        }
    }
    format!("{x:.6}")
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}

/// A doc comment as one line (its paragraphs joined).
fn text(schema: &Value, key: &str) -> Option<String> {
    let raw = schema.get(key).and_then(Value::as_str)?;
    let joined = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    (!joined.is_empty()).then_some(joined)
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// Text safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The schema of one config type, for tests of [`undocumented_in`].
pub fn schema_of<T: schemars::JsonSchema>() -> Value {
    schemars::schema_for!(T).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_in_configs() {
        assert_eq!(number(8.0 / 255.0), "\"8/255\"");
        assert_eq!(number(5.0 / 6.0), "\"5/6\"");
        assert_eq!(number(0.1), "0.1");
        assert_eq!(number(2e-4), "0.0002");
        assert_eq!(number(128.0), "128");
    }
}
