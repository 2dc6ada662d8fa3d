//! Gives every binary of this package (main, tests, benches) an rpath to the
//! libtorch it was linked against, so `target/release/ard-pipeline` runs without
//! `LD_LIBRARY_PATH`.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let lib = PathBuf::from(libtorch).join("lib");
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
