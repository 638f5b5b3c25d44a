//! Builds the exec shim (shim/exec.c) as a static binary, embedded in the
//! runtime and run from a sealed memfd (src/sealed.rs).

use std::path::PathBuf;

fn main() {
    let src = "shim/exec.c";
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("exec-shim");
    // The shim is a program of its own: none of the flags cargo gives Rust
    // (a fuzz build's sanitizers among them) apply to it.
    let compiler = cc::Build::new()
        .inherit_rustflags(false)
        .no_default_flags(true)
        .cargo_metadata(false)
        .get_compiler();
    let status = compiler
        .to_command()
        .args([
            "-static",
            "-nostdlib",
            "-ffreestanding",
            "-fno-builtin",
            "-fno-stack-protector",
            "-fno-pie",
            "-no-pie",
            "-Os",
            "-s",
            "-Wall",
            "-o",
        ])
        .arg(&out)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {:?}: {e}", compiler.path()));
    assert!(
        status.success(),
        "building {src} failed: a C compiler and the kernel's headers (Debian: gcc, linux-libc-dev) are needed"
    );
}
