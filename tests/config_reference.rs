//! The configuration reference of the book is generated from the config
//! types: every key and enum value has a doc comment, and the committed page
//! is what the generator writes now.

use ard_pipeline::reference::{page, schema_of, undocumented, undocumented_in, REFRESH};
use std::path::Path;

const PAGE: &str = "docs/src/configuration-reference.md";

#[test]
fn every_key_and_value_has_a_doc_comment() {
    let missing = undocumented();
    assert!(
        missing.is_empty(),
        "config keys or values without a `///` doc comment (src/config/types.rs, \
         src/sweep/spec.rs): {}",
        missing.join(", ")
    );
}

#[test]
fn the_committed_page_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(PAGE);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let fresh = page();
    if committed != fresh {
        let line = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(fresh.lines().count()));
        panic!(
            "{PAGE} is stale (first difference at line {}): refresh it with\n  cargo build --release && {REFRESH}",
            line + 1
        );
    }
}

#[test]
fn the_page_lists_types_defaults_and_values() {
    let page = page();
    for row in [
        "| `attack.eps` | real | `\"8/255\"` |",
        "| `run.resume` | string | `\"auto\"` |",
        "| `teacher.views` | \"all\" or integer | `\"all\"` |",
        "| `data.train_limit` | integer, optional | unset |",
        "| `base` | string | (required) |",
    ] {
        assert!(page.contains(row), "no row starting {row}");
    }
    assert!(
        page.contains("`\"never\"`: Start afresh"),
        "enum values and their meaning"
    );
}

/// A key without a doc comment and an enum value without one.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Sloppy {
    /// Documented.
    good: u32,
    bare: u32,
    /// Documented, but one of its values is not.
    mode: Mode,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum Mode {
    /// Has a doc.
    Fast,
    Slow,
}

#[test]
fn the_doc_check_finds_keys_and_values_without_docs() {
    let missing = undocumented_in(&schema_of::<Sloppy>());
    assert_eq!(missing, ["bare", "mode = `\"slow\"`"]);
}
