//! Reading the tests' CIFAR-10 copy (`common::cifar_root`: the offline copy or
//! a verified download), and the reader's errors on missing, truncated,
//! mislabelled and altered copies of its files.

mod common;

use ard_pipeline::config::DataChecksums;
use ard_pipeline::data::cifar::{RECORD_BYTES, TEST_FILES, TRAIN_FILES};
use ard_pipeline::data::{self, load_split, SplitKind, STAMP_FILE};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    common::cifar_root()
}

/// A writable copy of the test batch in a fresh tempdir.
fn test_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("test_batch.bin");
    fs::copy(root().join("test_batch.bin"), &file).unwrap();
    (dir, file)
}

fn err(root: &Path, checksums: DataChecksums) -> String {
    let e = load_split(root, SplitKind::Test, checksums).unwrap_err();
    // The full cause chain, as main prints it.
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(c) = src {
        s += &format!(": {c}");
        src = c.source();
    }
    s
}

#[test]
fn reads_the_test_data() {
    let checksums = common::cifar_checksums();
    let test = load_split(&root(), SplitKind::Test, checksums).unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(test.images.len(), 10_000 * 3072);
    assert_eq!(test.label(0), 3);
    assert_eq!(test.class_counts(), [1000; 10]);

    let train = load_split(&root(), SplitKind::Train, checksums).unwrap();
    assert_eq!(train.len(), 50_000);
    assert_eq!(train.label(0), 6);
    assert_eq!(train.class_counts(), [5000; 10]);

    // Image i is record i's bytes after the label byte, across files.
    let raw = fs::read(root().join("data_batch_2.bin")).unwrap();
    assert_eq!(
        train.image(10_000 + 7),
        &raw[7 * RECORD_BYTES + 1..8 * RECORD_BYTES]
    );
    assert_eq!(train.label(10_000 + 7), raw[7 * RECORD_BYTES]);

    // "any" accepts either copy; the other set refuses it, naming the file.
    assert!(load_split(&root(), SplitKind::Test, DataChecksums::Any).is_ok());
    if checksums == DataChecksums::OfflineCopy {
        // "official" needs a download stamp.
        let e = err(&root(), DataChecksums::Official);
        assert!(
            e.contains("test_batch.bin") && e.contains(STAMP_FILE),
            "{e}"
        );
    } else {
        let e = err(&root(), DataChecksums::OfflineCopy);
        assert!(
            e.contains("test_batch.bin") && e.contains("offline_copy"),
            "{e}"
        );
    }
}

#[test]
fn limits_take_a_prefix() {
    let cfg = ard_pipeline::config::DataConfig {
        root: root(),
        download: false,
        checksums: common::cifar_checksums(),
        test_limit: Some(100),
        ..Default::default()
    };
    let full = load_split(&root(), SplitKind::Test, DataChecksums::Skip).unwrap();
    let test = data::load(&cfg, SplitKind::Test).unwrap();
    assert_eq!(test.len(), 100);
    assert_eq!(test.image(99), full.image(99));
}

#[test]
fn missing_file_says_where_to_put_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = err(dir.path(), DataChecksums::OfflineCopy);
    assert!(e.contains("test_batch.bin") && e.contains("missing"), "{e}");
    assert!(
        e.contains(&dir.path().display().to_string()) && e.contains("data.download = true"),
        "{e}"
    );

    // Train: the first absent file is named.
    for name in TRAIN_FILES.iter().take(3).chain(TEST_FILES.iter()) {
        fs::copy(root().join(name), dir.path().join(name)).unwrap();
    }
    let e = load_split(dir.path(), SplitKind::Train, DataChecksums::OfflineCopy)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data_batch_4.bin") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn truncated_file() {
    let (dir, file) = test_copy();
    let bytes = fs::read(&file).unwrap();
    // Not a whole number of records.
    fs::write(&file, &bytes[..bytes.len() - 1000]).unwrap();
    let e = err(dir.path(), DataChecksums::Skip);
    assert!(
        e.contains("test_batch.bin") && e.contains("truncated"),
        "{e}"
    );
    // Whole records, but too few.
    fs::write(&file, &bytes[..RECORD_BYTES * 9_999]).unwrap();
    let e = err(dir.path(), DataChecksums::OfflineCopy);
    assert!(
        e.contains("test_batch.bin") && e.contains("9999 records") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn bad_label_byte() {
    let (dir, file) = test_copy();
    let mut bytes = fs::read(&file).unwrap();
    bytes[1234 * RECORD_BYTES] = 10;
    fs::write(&file, &bytes).unwrap();
    for checksums in [DataChecksums::Skip, DataChecksums::OfflineCopy] {
        let e = err(dir.path(), checksums);
        assert!(
            e.contains("test_batch.bin") && e.contains("record 1234") && e.contains("label"),
            "{e}"
        );
    }
}

#[test]
fn checksum_mismatch() {
    let (dir, file) = test_copy();
    let mut bytes = fs::read(&file).unwrap();
    bytes[5 * RECORD_BYTES + 100] ^= 0xff; // one pixel
    fs::write(&file, &bytes).unwrap();
    let actual = data::checksum::md5_hex(&bytes);
    let e = err(dir.path(), DataChecksums::OfflineCopy);
    assert!(
        e.contains("test_batch.bin") && e.contains("offline_copy"),
        "{e}"
    );
    assert!(
        e.contains("c3b28fcb373f35d9e9d1b6f7428ee370") && e.contains(&actual),
        "{e}"
    );
    let e = err(dir.path(), DataChecksums::Any);
    assert!(e.contains("test_batch.bin") && e.contains(&actual), "{e}");
    // Explicitly skipped: the altered pixel is read as is.
    let s = load_split(dir.path(), SplitKind::Test, DataChecksums::Skip).unwrap();
    assert_eq!(s.image(5)[99], bytes[5 * RECORD_BYTES + 100]);
}
