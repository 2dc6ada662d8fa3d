//! No broken internal link in the docs: every relative link (and image) of
//! README.md, weights/README.md and the book's chapters (docs/src) names a
//! file that exists, every `#anchor` names a heading of its target (ids made
//! as mdBook makes them), and a link of the book stays inside docs/src, the
//! only folder mdBook publishes. mdBook itself checks none of this; `make
//! docs` builds the book and runs this test.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

/// Every Markdown file under `dir`, recursively, in name order.
fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            markdown_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

/// `path` with `.` and `..` resolved lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The file's text with mdBook's whole-file `{{#include PATH}}` lines inlined.
fn expanded(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|line| {
            let inner = line
                .trim()
                .strip_prefix("{{#include ")
                .and_then(|l| l.strip_suffix("}}"));
            match inner {
                Some(rel) => expanded(&file.parent().unwrap().join(rel.trim())),
                None => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_HEADING_ATTRIBUTES | Options::ENABLE_FOOTNOTES
}

/// The ids of a Markdown file's headings, as mdBook (and, for plain text,
/// GitHub) makes them: lower case, letters, digits, `-` and `_` kept,
/// spaces as `-`, the rest dropped; a repeated id gets `-1`, `-2`, ...
fn heading_ids(file: &Path) -> HashSet<String> {
    let text = expanded(file);
    let mut ids = HashSet::new();
    let mut current: Option<(String, Option<String>)> = None;
    for event in Parser::new_ext(&text, options()) {
        match event {
            Event::Start(Tag::Heading { id, .. }) => {
                current = Some((String::new(), id.map(|i| i.to_string())));
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some((title, _)) = current.as_mut() {
                    title.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let (title, explicit) = current.take().unwrap_or_default();
                let id = explicit.unwrap_or_else(|| slug(&title));
                let mut unique = id.clone();
                let mut n = 1;
                while !ids.insert(unique.clone()) {
                    unique = format!("{id}-{n}");
                    n += 1;
                }
            }
            _ => {}
        }
    }
    ids
}

fn slug(title: &str) -> String {
    title
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() || c == '_' || c == '-' => Some(c),
            c if c.is_whitespace() => Some('-'),
            _ => None,
        })
        .collect()
}

/// The link and image targets of a Markdown file, included files in place
/// (mdBook resolves their links from the including chapter); code skipped.
fn links(file: &Path) -> Vec<String> {
    let text = expanded(file);
    Parser::new_ext(&text, options())
        .filter_map(|event| match event {
            Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. }) => Some(dest_url.to_string()),
            _ => None,
        })
        .collect()
}

/// What is wrong with each broken link of `files` (one line each); `book`
/// is the book's source folder, which its links must not leave.
fn broken_links(files: &[PathBuf], book: &Path) -> Vec<String> {
    let book = normalize(book);
    let mut problems = Vec::new();
    for file in files {
        for link in links(file) {
            if let Some(why) = check_link(file, &link, &book) {
                problems.push(format!("{}: link `{link}`: {why}", file.display()));
            }
        }
    }
    problems
}

fn check_link(file: &Path, link: &str, book: &Path) -> Option<String> {
    if link.contains("://") || link.starts_with("mailto:") {
        return None;
    }
    let (path, anchor) = link.split_once('#').unwrap_or((link, ""));
    let target = if path.is_empty() {
        file.to_path_buf()
    } else {
        normalize(&file.parent().unwrap().join(path.replace("%20", " ")))
    };
    if normalize(file).starts_with(book) && !target.starts_with(book) {
        return Some(format!(
            "leaves the book's folder {} (mdBook publishes only that folder; name the repository file in `code` instead)",
            book.display()
        ));
    }
    if !target.exists() {
        return Some(format!("{} does not exist", target.display()));
    }
    if anchor.is_empty() {
        return None;
    }
    if target.extension().is_none_or(|e| e != "md") {
        return Some(format!(
            "an anchor into {}, which is not Markdown",
            target.display()
        ));
    }
    let ids = heading_ids(&target);
    (!ids.contains(anchor))
        .then(|| format!("{} has no heading with id `{anchor}`", target.display()))
}

fn repository_docs(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("weights/README.md")];
    markdown_files(&root.join("docs/src"), &mut files);
    files
}

#[test]
fn readme_and_the_book_have_no_broken_internal_link() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = repository_docs(root);
    assert!(files.len() > 5, "the book's chapters: {files:?}");
    let problems = broken_links(&files, &root.join("docs/src"));
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_chapter_is_in_the_summary() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src");
    let summary = links(&src.join("SUMMARY.md"));
    let mut chapters = Vec::new();
    markdown_files(&src, &mut chapters);
    for chapter in chapters {
        let rel = chapter
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(
            rel == "SUMMARY.md" || summary.contains(&rel),
            "{rel} is not listed in docs/src/SUMMARY.md, so the book leaves it out"
        );
    }
}

#[test]
fn the_check_finds_broken_files_anchors_and_links_out_of_the_book() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("docs/src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("a.md"),
        "# Chapter A\n\n## Two words\n\n## Two words\n\n\
         [ok](b.md#the-end) [ok](#two-words-1) [ok](#chapter-a) [web](https://example.org/x#y)\n\n\
         [gone](missing.md) [no anchor](b.md#nowhere) [out](../../README.md)\n\n\
         ```rust\nlet x = y[z](w);\n```\n",
    )
    .unwrap();
    std::fs::write(
        src.join("b.md"),
        "# B\n\n### The `end`\n\n{{#include part.txt}}\n",
    )
    .unwrap();
    std::fs::write(src.join("part.txt"), "## Included heading\n").unwrap();
    std::fs::write(
        dir.path().join("README.md"),
        "[in](docs/src/b.md#included-heading) [bad](docs/src/a.md#b)\n",
    )
    .unwrap();
    let files = vec![
        dir.path().join("README.md"),
        src.join("a.md"),
        src.join("b.md"),
    ];
    let problems = broken_links(&files, &src);
    let found: Vec<&str> = problems
        .iter()
        .map(|p| p.split("link `").nth(1).unwrap().split('`').next().unwrap())
        .collect();
    assert_eq!(
        found,
        [
            "docs/src/a.md#b",
            "missing.md",
            "b.md#nowhere",
            "../../README.md"
        ],
        "{problems:#?}"
    );
}
