//! libtorch's CUDA half reaches this package's binaries (tch-rs issues 907,
//! 980): when the libtorch built against has `lib/libtorch_cuda.so`, the main
//! binary and this test binary list it in their ELF dynamic section, it is
//! loaded, and libtorch reports CUDA compiled in; against a CPU-only libtorch
//! none of that holds and `doctor` says so. The dynamic section is read from
//! the files, not taken from a build flag.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The libtorch folder the package was built against (`.cargo/config.toml`).
fn libtorch() -> PathBuf {
    let dir = PathBuf::from(option_env!("LIBTORCH").unwrap_or(".venv/libtorch"));
    if dir.is_absolute() {
        dir
    } else {
        common::repo().join(dir)
    }
}

fn needed(binary: &Path) -> Vec<String> {
    let bytes = std::fs::read(binary).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    elf.libraries.iter().map(|s| s.to_string()).collect()
}

#[test]
fn binaries_link_the_cuda_half_exactly_when_libtorch_has_one() {
    let has_cuda_half = libtorch().join("lib/libtorch_cuda.so").exists();
    let main = PathBuf::from(env!("CARGO_BIN_EXE_ard-pipeline"));
    let this_test = std::env::current_exe().unwrap();
    for binary in [&main, &this_test] {
        let libs = needed(binary);
        assert!(libs.iter().any(|l| l == "libtorch_cpu.so"), "{libs:?}");
        assert_eq!(
            libs.iter().any(|l| l == "libtorch_cuda.so"),
            has_cuda_half,
            "{}: DT_NEEDED {libs:?}; libtorch {} has libtorch_cuda.so: {has_cuda_half}",
            binary.display(),
            libtorch().display()
        );
    }
    // In this process too: the hooks of the CUDA half registered themselves.
    assert_eq!(tch::utils::has_cudart(), has_cuda_half);
}

#[test]
fn doctor_reports_cuda_compiled_in_and_the_libtorch_loaded() {
    let has_cuda_half = libtorch().join("lib/libtorch_cuda.so").exists();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("doctor.json");
    let out = Command::new(env!("CARGO_BIN_EXE_ard-pipeline"))
        .args(["doctor", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(d["cuda_linked_at_build"], has_cuda_half, "{d}");
    assert_eq!(d["cuda_library_loaded"], has_cuda_half, "{d}");
    assert_eq!(d["cuda_compiled"], has_cuda_half, "{d}");
    assert_eq!(
        d["cuda_devices"].as_u64(),
        Some(tch::Cuda::device_count() as u64)
    );
    // The libtorch loaded is the one built against.
    assert_eq!(d["libtorch_loaded"], d["libtorch_built_against"], "{d}");
    let loaded = PathBuf::from(d["libtorch_loaded_from"].as_str().unwrap());
    assert_eq!(
        loaded.canonicalize().unwrap(),
        libtorch().canonicalize().unwrap()
    );
    assert!(stdout.contains("CUDA compiled in"), "{stdout}");
    assert!(stdout.contains("verdict: ok"), "{stdout}");
}
