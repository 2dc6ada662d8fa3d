//! Link settings for every binary of this package (main, tests, benches):
//!
//! - an rpath to the libtorch it was linked against, so
//!   `target/release/ard-pipeline` runs without `LD_LIBRARY_PATH`;
//! - libtorch's CUDA half (`libtorch_cuda.so`) as a dynamic dependency whenever
//!   that libtorch has one. No symbol of it is referenced directly (it only
//!   registers CUDA with libtorch when loaded), so the linker's `--as-needed`
//!   drops it, and the link arguments printed by `torch-sys`'s build script do
//!   not reach a dependent package's binaries (tch-rs issues 907, 980): without
//!   this, CUDA is "not available" on a machine with a GPU. Built against a
//!   CPU-only libtorch nothing changes;
//! - the libtorch version and whether the CUDA half was linked, for
//!   `ard-pipeline doctor` (`ARD_LIBTORCH_BUILD_VERSION`, `ARD_LIBTORCH_CUDA_LINKED`).
use std::path::PathBuf;

#[path = "src/libtorch_dir.rs"]
mod libtorch_dir;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=src/libtorch_dir.rs");
    let mut version = String::from("unknown");
    let mut cuda_linked = false;
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let root = PathBuf::from(&libtorch);
        let root = root.canonicalize().unwrap_or(root);
        let lib = root.join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        if lib.join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-search=native={}", lib.display());
            // One argument, so the as-needed state is switched off for this
            // library only and restored after it.
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
            cuda_linked = true;
        }
        if let Some(v) = libtorch_dir::libtorch_version(&root) {
            version = v;
        }
    }
    println!("cargo:rustc-env=ARD_LIBTORCH_BUILD_VERSION={version}");
    println!(
        "cargo:rustc-env=ARD_LIBTORCH_CUDA_LINKED={}",
        u8::from(cuda_linked)
    );
}
