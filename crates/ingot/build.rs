//! Link flags of the `ingot` binary.

fn main() {
    // Relative relocations packed (DT_RELR, glibc 2.36, binutils 2.38):
    // the dynamic loader walks a 13 KB bitmap instead of 44,000 RELA
    // entries (1 MB) at every start; a tenth of a millisecond of each
    // `ingot run`. The binary stays position-independent.
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if linux_gnu {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
