//! The soft-label cache file on bad input and in parallel use: truncated,
//! foreign and version-mismatched files, headers of another teacher / dataset /
//! policy, and a second writer are refused with errors naming the file (and the
//! field); nothing is corrupted. Sharded fills merged equal an unsharded fill
//! byte for byte, through the library and the `soft-labels` subcommand.

mod common;

use ard_pipeline::config::{self, Config};
use ard_pipeline::models::Model;
use ard_pipeline::soft_labels::format::{Dtype, Header, Identity, AUGMENTATION};
use ard_pipeline::soft_labels::{
    self, command, Access, CacheError, Shard, SoftLabelCache, ViewSet,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::Device;

fn identity() -> Identity {
    Identity {
        teacher_arch: "wrn10_1".into(),
        teacher_weights_md5: "0123456789abcdef0123456789abcdef".into(),
        dataset_md5: "fedcba9876543210fedcba9876543210".into(),
        dataset_images: 30,
        augmentation: AUGMENTATION.into(),
        views: ViewSet::All,
        num_classes: 10,
        dtype: Dtype::F16,
    }
}

/// A cache file of 30 images x 162 views with every third entry filled.
fn write_cache(path: &Path) -> Header {
    let header = Header::new(identity(), 0, 30, None);
    let mut cache = SoftLabelCache::open(path, &header, Access::ReadWrite).unwrap();
    for i in 0..30u64 {
        for s in (0..162).step_by(3) {
            let logits: Vec<f32> = (0..10)
                .map(|c| (i * 1000 + s as u64 * 10 + c) as f32 * 0.01 - 3.0)
                .collect();
            cache.put(i, s, &logits).unwrap();
        }
    }
    assert!(cache.flush().unwrap());
    header
}

fn contains(e: &CacheError, parts: &[&str]) {
    let text = e.to_string();
    for p in parts {
        assert!(text.contains(p), "{text:?} lacks {p:?}");
    }
}

#[test]
fn round_trip_read_only_and_f16_rounding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.softlabels");
    let header = write_cache(&path);
    let cache = SoftLabelCache::open(&path, &header, Access::ReadOnly).unwrap();
    assert_eq!((cache.filled(), cache.capacity()), (30 * 54, 30 * 162));
    assert!(!cache.is_complete() && !cache.is_writable());
    let mut out = [0f32; 10];
    assert!(cache.get(7, 3, &mut out).unwrap());
    for (c, &x) in out.iter().enumerate() {
        let exact = (7000 + 30 + c) as f32 * 0.01 - 3.0;
        assert_eq!(x, half::f16::from_f32(exact).to_f32());
        assert!((x - exact).abs() <= exact.abs() * 1e-3);
    }
    assert!(!cache.get(7, 4, &mut out).unwrap());
    contains(
        &cache.get(30, 0, &mut out).unwrap_err(),
        &["c.softlabels", "image 30"],
    );
    contains(&cache.get(0, 162, &mut out).unwrap_err(), &["slot 162"]);
    // A read-only cache refuses to store.
    let mut ro = cache;
    contains(&ro.put(0, 1, &[0.0; 10]).unwrap_err(), &["read-only"]);
    // Size: header + 30*162 bits + 30*162*10 f16.
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 30 * 162 * 20 && len < 30 * 162 * 20 + 1024, "{len}");
}

#[test]
fn truncated_and_foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("good.softlabels");
    let header = write_cache(&path);
    let bytes = std::fs::read(&path).unwrap();
    for cut in [
        0usize,
        5,
        12,
        20,
        200,
        700,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        let p = dir.path().join(format!("cut-{cut}.softlabels"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = SoftLabelCache::open(&p, &header, Access::ReadOnly).unwrap_err();
        let name = p.file_name().unwrap().to_str().unwrap();
        // An empty file has no magic at all; a cut inside the magic (all of
        // it right so far) or anywhere later is a truncation.
        let kind = if cut == 0 {
            "not a soft-label cache"
        } else {
            "truncated"
        };
        contains(&e, &[name, kind]);
        // A writer refuses it too, and leaves it alone.
        let e = SoftLabelCache::open(&p, &header, Access::ReadWrite).unwrap_err();
        contains(&e, &[name]);
        assert_eq!(std::fs::read(&p).unwrap(), &bytes[..cut]);
        assert!(!soft_labels::lock::lock_path(&p).exists());
    }
    // Trailing bytes.
    let p = dir.path().join("long.softlabels");
    let mut long = bytes.clone();
    long.extend_from_slice(&[0; 3]);
    std::fs::write(&p, &long).unwrap();
    contains(
        &SoftLabelCache::open_any(&p).unwrap_err(),
        &["long.softlabels", "trailing"],
    );
    // Random bytes, a safetensors file, a text file.
    let p = dir.path().join("random.bin");
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&p, noise).unwrap();
    contains(
        &SoftLabelCache::open_any(&p).unwrap_err(),
        &["random.bin", "not a soft-label cache"],
    );
    let p = dir.path().join("model.safetensors");
    Model::new("wrn10_1".parse().unwrap(), Device::Cpu)
        .save(&p)
        .unwrap();
    contains(
        &SoftLabelCache::open_any(&p).unwrap_err(),
        &["model.safetensors", "not a soft-label cache"],
    );
    // Right magic, other version.
    let p = dir.path().join("v9.softlabels");
    let mut v9 = bytes.clone();
    v9[8..12].copy_from_slice(&9u32.to_le_bytes());
    std::fs::write(&p, v9).unwrap();
    let e = SoftLabelCache::open_any(&p).unwrap_err();
    assert!(matches!(e, CacheError::Version { found: 9, .. }), "{e}");
    // Right magic and version, garbage header.
    let p = dir.path().join("garbage.softlabels");
    let mut garbage = bytes.clone();
    for b in &mut garbage[16..40] {
        *b = 0xff;
    }
    std::fs::write(&p, garbage).unwrap();
    let e = SoftLabelCache::open_any(&p).unwrap_err();
    assert!(
        matches!(e, CacheError::Corrupt { .. } | CacheError::Truncated { .. }),
        "{e}"
    );
    // Bits set past the last entry of the bitmap (30 * 162 entries leave 4 spare bits).
    let (_, layout) = soft_labels::format::encode_header(&header, &path).unwrap();
    let p = dir.path().join("bits.softlabels");
    let mut bits = bytes.clone();
    bits[(layout.bitmap_offset + layout.bitmap_bytes - 1) as usize] |= 0x80;
    std::fs::write(&p, bits).unwrap();
    contains(
        &SoftLabelCache::open_any(&p).unwrap_err(),
        &["bits.softlabels", "corrupt", "bitmap"],
    );
    // The good file is still good.
    SoftLabelCache::open(&path, &header, Access::ReadOnly).unwrap();
}

#[test]
fn mismatched_headers_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.softlabels");
    write_cache(&path);
    let before = std::fs::read(&path).unwrap();
    type Change = Box<dyn Fn(&mut Identity)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "teacher_arch",
            Box::new(|i| i.teacher_arch = "wrn34_10".into()),
        ),
        (
            "teacher_weights_md5",
            Box::new(|i| i.teacher_weights_md5 = "00".repeat(16)),
        ),
        ("dataset_md5", Box::new(|i| i.dataset_md5 = "11".repeat(16))),
        (
            "augmentation",
            Box::new(|i| i.augmentation = "crop32-pad2".into()),
        ),
        ("views", Box::new(|i| i.views = ViewSet::Fixed(4))),
        ("num_classes", Box::new(|i| i.num_classes = 100)),
        ("dtype", Box::new(|i| i.dtype = Dtype::F32)),
    ];
    for (field, change) in cases {
        let mut id = identity();
        change(&mut id);
        let want = Header::new(id, 0, 30, None);
        for access in [Access::ReadOnly, Access::ReadWrite] {
            let e = SoftLabelCache::open(&path, &want, access).unwrap_err();
            assert!(
                matches!(&e, CacheError::Mismatch { field: f, .. } if *f == field),
                "{field}: {e}"
            );
            contains(&e, &["c.softlabels", &format!("`{field}`")]);
        }
    }
    // A shard's range where the whole split is expected.
    let shard = Header::new(identity(), 0, 15, Some(Shard { index: 0, count: 2 }));
    let e = SoftLabelCache::open(&path, &shard, Access::ReadOnly).unwrap_err();
    contains(&e, &["c.softlabels", "image range"]);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "refusing never writes"
    );
    assert!(!soft_labels::lock::lock_path(&path).exists());
}

#[test]
fn a_second_writer_is_refused_and_readers_are_not_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.softlabels");
    let header = write_cache(&path);
    let before = std::fs::read(&path).unwrap();
    let mut writer = SoftLabelCache::open(&path, &header, Access::ReadWrite).unwrap();
    let e = SoftLabelCache::open(&path, &header, Access::ReadWrite).unwrap_err();
    assert!(matches!(e, CacheError::Locked { .. }), "{e}");
    contains(
        &e,
        &[
            "c.softlabels",
            "c.softlabels.lock",
            &format!("pid {}", std::process::id()),
        ],
    );
    // From another thread too (another run in the same process).
    let p2 = path.clone();
    let h2 = header.clone();
    let e = std::thread::spawn(move || {
        SoftLabelCache::open(&p2, &h2, Access::ReadWrite)
            .unwrap_err()
            .to_string()
    })
    .join()
    .unwrap();
    assert!(e.contains("lock"), "{e}");
    // Readers go on reading the last written file while the writer works.
    let reader = SoftLabelCache::open(&path, &header, Access::ReadOnly).unwrap();
    writer.put(0, 1, &[1.0; 10]).unwrap();
    assert!(writer.flush().unwrap());
    let mut out = [0f32; 10];
    assert!(
        !reader.get(0, 1, &mut out).unwrap(),
        "the reader's mapping is the old file"
    );
    drop(writer);
    assert!(!soft_labels::lock::lock_path(&path).exists());
    let after = SoftLabelCache::open(&path, &header, Access::ReadOnly).unwrap();
    assert!(after.get(0, 1, &mut out).unwrap());
    assert_eq!(out, [1.0; 10]);
    assert_eq!(after.filled(), reader.filled() + 1);
    assert_ne!(std::fs::read(&path).unwrap(), before);
    // No temp files left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["c.softlabels"]);
}

fn fill_config(dir: &Path, cache: &str, dtype: &str) -> (Config, PathBuf) {
    let text = format!(
        r#"
[run]
device = "cpu"
threads = 1
[data]
root = "{root}"
download = false
checksums = "skip"
batch_size = 16
train_limit = 40
[teacher]
arch = "wrn10_1"
weights = "{out}/teacher.safetensors"
soft_labels = "cached"
views = 3
cache_dir = "{out}/{cache}"
cache_dtype = "{dtype}"
[student]
arch = "mobilenet_v2_x0.25"
[loss]
kind = "ard"
[eval]
attacks = []
[metrics]
listen = ""
"#,
        out = dir.display(),
        root = common::cifar_root().display()
    );
    let file = dir.join(format!("{cache}.toml"));
    std::fs::write(&file, &text).unwrap();
    (config::load_str(&text, "fill.toml", false).unwrap(), file)
}

fn teacher(dir: &Path) {
    tch::manual_seed(3);
    Model::new("wrn10_1".parse().unwrap(), Device::Cpu)
        .save(&dir.join("teacher.safetensors"))
        .unwrap();
}

#[test]
fn sharded_fill_and_merge_equal_an_unsharded_fill() {
    common::deterministic();
    let dir = tempfile::tempdir().unwrap();
    teacher(dir.path());
    let (whole, _) = fill_config(dir.path(), "whole", "f32");
    let r = command::fill(&whole, None, || false, |_| {}).unwrap();
    assert_eq!((r.images, r.computed), ((0, 40), 120));
    let expected = std::fs::read(&r.path).unwrap();

    let (sharded, _) = fill_config(dir.path(), "sharded", "f32");
    let full = soft_labels::cache_path(&sharded).unwrap();
    let mut shard_files = Vec::new();
    for index in [2, 0, 1] {
        let s = Shard { index, count: 3 };
        let r = command::fill(&sharded, Some(s), || false, |_| {}).unwrap();
        assert_eq!(r.path, s.path(&full));
        assert_eq!(r.images, s.range(40));
        shard_files.push(r.path);
    }
    // A missing shard, a shard given twice, a shard of another cache: refused.
    let e = soft_labels::merge(&shard_files[..2], &full).unwrap_err();
    contains(&e, &["missing", "1/3"]);
    let e = soft_labels::merge(
        &[
            shard_files[0].clone(),
            shard_files[0].clone(),
            shard_files[1].clone(),
        ],
        &full,
    )
    .unwrap_err();
    contains(&e, &["twice"]);
    let (other, _) = fill_config(dir.path(), "other", "f16");
    let other_shard = command::fill(&other, Some(Shard { index: 1, count: 3 }), || false, |_| {})
        .unwrap()
        .path;
    let e = soft_labels::merge(
        &[shard_files[0].clone(), other_shard, shard_files[2].clone()],
        &full,
    )
    .unwrap_err();
    contains(&e, &["`dtype`"]);
    assert!(!full.exists(), "failed merges write nothing");

    // `--output X` without shard arguments merges the shards beside the
    // config's cache file (as `--help` says), not `X.shard-*`.
    let elsewhere = dir.path().join("elsewhere.softlabels");
    let report = command::merge(Some(&sharded), Vec::new(), Some(elsewhere.clone())).unwrap();
    assert_eq!(
        (report.shards, report.output.clone()),
        (3, elsewhere.clone())
    );
    assert_eq!(std::fs::read(&elsewhere).unwrap(), expected);
    let e = command::merge(None, Vec::new(), Some(elsewhere))
        .unwrap_err()
        .to_string();
    assert!(e.contains("shard files") && e.contains("--config"), "{e}");
    let report = command::merge(Some(&sharded), Vec::new(), None).unwrap();
    assert_eq!((report.shards, report.images, report.entries), (3, 40, 120));
    assert_eq!(
        std::fs::read(&full).unwrap(),
        expected,
        "merged shards == unsharded fill, byte for byte"
    );
    let merged = SoftLabelCache::open_any(&full).unwrap();
    assert!(merged.is_complete() && merged.header().shard.is_none());
}

#[test]
fn the_soft_labels_subcommand_fills_shards_and_merges() {
    common::deterministic();
    let dir = tempfile::tempdir().unwrap();
    teacher(dir.path());
    let (cfg, file) = fill_config(dir.path(), "cli", "f16");
    let bin = env!("CARGO_BIN_EXE_ard-pipeline");
    let run = |args: &[&str]| {
        let out = Command::new(bin)
            .arg("--config")
            .arg(&file)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    for shard in ["0/2", "1/2"] {
        let (ok, text) = run(&["soft-labels", "--shard", shard]);
        assert!(ok, "{text}");
    }
    let (ok, text) = run(&["soft-labels", "merge"]);
    assert!(ok && text.contains("merged 2 shards"), "{text}");
    let full = soft_labels::cache_path(&cfg).unwrap();
    assert!(SoftLabelCache::open_any(&full).unwrap().is_complete());
    // Filling a complete cache computes nothing.
    let (ok, text) = run(&["soft-labels"]);
    assert!(ok && text.contains("0 entries computed"), "{text}");
    // Bad shard specifications fail with a clear message.
    let (ok, text) = run(&["soft-labels", "--shard", "2/2"]);
    assert!(!ok && text.contains("I must be below N"), "{text}");
    // Each shard has its own lock: a lock on the full file does not stop a
    // shard, a lock on the shard's file does.
    let lock = soft_labels::lock::lock_path(&full);
    std::fs::write(
        &lock,
        format!("pid {} host elsewhere nonce 0\n", std::process::id()),
    )
    .unwrap();
    let (ok, text) = run(&["soft-labels", "--shard", "0/2"]);
    assert!(ok, "{text}");
    std::fs::remove_file(&lock).unwrap();
    let shard_lock = soft_labels::lock::lock_path(&Shard { index: 0, count: 2 }.path(&full));
    std::fs::write(&shard_lock, "pid 1 host elsewhere nonce 0\n").unwrap();
    let (ok, text) = run(&["soft-labels", "--shard", "0/2"]);
    assert!(
        !ok && text.contains("another writer holds the lock") && text.contains("shard-0-of-2.lock"),
        "{text}"
    );
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn sigint_during_a_fill_keeps_the_entries_and_the_lock_goes() {
    let dir = tempfile::tempdir().unwrap();
    teacher(dir.path());
    let (_, file) = fill_config(dir.path(), "sigint", "f16");
    // Large enough to take a while on one thread: 4,000 images x 40 views.
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("train_limit = 40", "train_limit = 4000")
        .replace("views = 3", "views = 40");
    std::fs::write(&file, &text).unwrap();
    let cfg = config::load_str(&text, "fill.toml", false).unwrap();
    let cache = soft_labels::cache_path(&cfg).unwrap();
    let lock = soft_labels::lock::lock_path(&cache);
    let mut child = common::services::Killed(
        Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
            .arg("--config")
            .arg(&file)
            .arg("soft-labels")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !lock.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the fill never took its lock"
        );
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the fill ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: sending a signal to our own child process by PID.
    assert_eq!(unsafe { libc_kill(child.0.id() as i32, 2) }, 0);
    let status = child.0.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted by SIGINT") && stderr.contains("left"),
        "{stderr}"
    );
    assert!(!lock.exists(), "the lock file was left behind");
    let kept = SoftLabelCache::open_any(&cache).unwrap();
    assert!(
        kept.filled() > 0 && !kept.is_complete(),
        "{} entries kept",
        kept.filled()
    );
}

#[test]
fn config_keys_are_validated() {
    let err = |text: &str| {
        config::load_str(text, "bad.toml", false)
            .unwrap_err()
            .to_string()
    };
    let e = err("[teacher]\ncache_dtype = \"f8\"\n");
    assert!(e.contains("cache_dtype") && e.contains("f8"), "{e}");
    let e = err("[teacher]\nviews = 4\n[data]\naugment = false\n");
    assert!(
        e.contains("teacher.views") && e.contains("data.augment"),
        "{e}"
    );
    let e = err("[teacher]\nviews = 163\n");
    assert!(e.contains("teacher.views"), "{e}");
    let e = err("[teacher]\nsoft_labels = \"cached\"\n[loss]\nkind = \"pgd_at\"\n");
    assert!(e.contains("teacher.soft_labels"), "{e}");
    let ok = "[teacher]\nweights = \"t.safetensors\"\nsoft_labels = \"cached\"\nviews = 8\ncache_dtype = \"f32\"\n";
    let cfg = config::load_str(ok, "ok.toml", false).unwrap();
    assert_eq!(
        soft_labels::cache_path(&cfg).unwrap(),
        Path::new("cache/soft-labels/wrn34_10-k8-f32.softlabels")
    );
}

/// A complete cache held on the device (the CUDA path, run here on the CPU)
/// gives the same soft labels as reading the file per batch; an incomplete
/// cache is not held.
#[test]
fn a_resident_cache_gives_the_same_soft_labels_as_the_file() {
    use ard_pipeline::data;
    use ard_pipeline::soft_labels::SoftLabelSource;
    common::deterministic();
    let dir = tempfile::tempdir().unwrap();
    teacher(dir.path());
    let (cfg, _) = fill_config(dir.path(), "resident", "f16");
    let r = command::fill(&cfg, None, || false, |_| {}).unwrap();
    let open = || SoftLabelSource::cached(SoftLabelCache::open_any(&r.path).unwrap());
    let (mut from_file, mut resident) = (open(), open());
    assert!(resident.keep_on_device(Device::Cpu).unwrap());
    let teacher = Model::load(
        "wrn10_1".parse().unwrap(),
        Device::Cpu,
        &dir.path().join("teacher.safetensors"),
    )
    .unwrap();
    let train = data::load_split(&cfg.data.root, data::SplitKind::Train, cfg.data.checksums)
        .unwrap()
        .prefix(40);
    let view_set = soft_labels::identity::view_set(&cfg).unwrap();
    let mut batches = 0;
    for epoch in 0..2u64 {
        let plan = data::EpochPlan::train(&cfg.data, 0, epoch);
        for (indices, planned) in data::batches(&train, &plan) {
            let views = view_set.training_views(0, epoch, true, &indices, planned);
            let batch = data::make_batch(&train, &indices, &views, Device::Cpu).unwrap();
            let a = from_file
                .logits(&teacher, &batch.images, &batch.indices, &batch.views)
                .unwrap();
            let b = resident
                .logits(&teacher, &batch.images, &batch.indices, &batch.views)
                .unwrap();
            assert_eq!(a.size(), b.size());
            assert_eq!(common::max_abs(&a, &b), 0.0);
            batches += 1;
        }
    }
    assert!(batches >= 4);
    assert_eq!(resident.counts(), from_file.counts());

    // A third filled: nothing to hold, the file path is used.
    let partial = dir.path().join("partial.softlabels");
    write_cache(&partial);
    let cache = SoftLabelCache::open_any(&partial).unwrap();
    assert!(!cache.is_complete());
    assert!(!SoftLabelSource::cached(cache)
        .keep_on_device(Device::Cpu)
        .unwrap());
}

#[test]
fn filling_a_cache_for_an_online_teacher_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cfg, _) = fill_config(dir.path(), "online", "f16");
    cfg.teacher.soft_labels = config::SoftLabels::Online;
    let e = command::fill(&cfg, None, || false, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("teacher.soft_labels = \"online\"") && e.contains("nothing to fill"),
        "{e}"
    );
    assert!(!dir.path().join("online").exists(), "no cache folder made");
}

#[test]
fn a_flipped_byte_is_caught_by_the_checksums_and_its_block_refilled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("good.softlabels");
    let header = write_cache(&path);
    let bytes = std::fs::read(&path).unwrap();
    let (_, layout) = soft_labels::format::encode_header(&header, &path).unwrap();
    let entry = |i: u64, s: u64| i * 162 + s;
    // One bit of the high byte of image 7, slot 3's first f16 logit.
    let mut flipped = bytes.clone();
    flipped[(layout.logits_offset + entry(7, 3) * 20 + 1) as usize] ^= 0x40;
    let p = dir.path().join("flipped.softlabels");
    std::fs::write(&p, &flipped).unwrap();
    let block = entry(7, 3) / soft_labels::format::BLOCK_ENTRIES;
    let in_block = |e: u64| e / soft_labels::format::BLOCK_ENTRIES == block;
    let dropped = (0..30 * 162u64)
        .filter(|&e| e % 162 % 3 == 0 && in_block(e))
        .count() as u64;
    let cache = SoftLabelCache::open(&p, &header, Access::ReadOnly).unwrap();
    let mut out = [0f32; 10];
    assert!(
        !cache.get(7, 3, &mut out).unwrap(),
        "a damaged entry is served"
    );
    assert!(
        cache.get(0, 0, &mut out).unwrap(),
        "an intact block is lost"
    );
    assert_eq!(cache.filled(), 30 * 54 - dropped);
    drop(cache);
    // A writer computes the block again and writes a consistent file.
    let mut w = SoftLabelCache::open(&p, &header, Access::ReadWrite).unwrap();
    assert_eq!(w.filled(), 30 * 54 - dropped);
    w.put(7, 3, &[1.0; 10]).unwrap();
    assert!(w.flush().unwrap());
    drop(w);
    let again = SoftLabelCache::open(&p, &header, Access::ReadOnly).unwrap();
    assert!(again.get(7, 3, &mut out).unwrap());
    assert_eq!(out, [1.0; 10]);
    assert_eq!(again.filled(), 30 * 54 - dropped + 1);

    // A changed bitmap is refused by name.
    let mut bits = bytes.clone();
    bits[(layout.bitmap_offset + 10) as usize] ^= 0x02;
    let p = dir.path().join("bitmap.softlabels");
    std::fs::write(&p, bits).unwrap();
    contains(
        &SoftLabelCache::open_any(&p).unwrap_err(),
        &[
            "bitmap.softlabels",
            "bitmap fails its checksum",
            "fill it again",
        ],
    );
    // A file of the format before checksums is refused with a clear line.
    let mut v1 = bytes.clone();
    v1[8..12].copy_from_slice(&1u32.to_le_bytes());
    let p = dir.path().join("v1.softlabels");
    std::fs::write(&p, v1).unwrap();
    contains(
        &SoftLabelCache::open_any(&p).unwrap_err(),
        &["v1.softlabels", "format version 1", "fill it again"],
    );
}

#[test]
fn non_finite_logits_are_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.softlabels");
    let header = Header::new(identity(), 0, 30, None);
    let mut cache = SoftLabelCache::open(&path, &header, Access::ReadWrite).unwrap();
    let mut logits = [0.5f32; 10];
    logits[4] = f32::NAN;
    contains(
        &cache.put(3, 0, &logits).unwrap_err(),
        &[
            "nan.softlabels",
            "image 3, slot 0",
            "not finite",
            "nothing was stored",
        ],
    );
    logits[4] = 1e6;
    contains(
        &cache.put(3, 0, &logits).unwrap_err(),
        &["beyond f16's range", "cache_dtype"],
    );
    assert!(!cache.contains(3, 0).unwrap());
    assert_eq!(cache.filled(), 0);
}
