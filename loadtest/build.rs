//! Builds the probes of `dispatch-latency` with the C compiler that links Rust programs
//! (`$CC`, else `cc`): `stamp-bare.c` without a C library (its default `--stamp bare`, x86_64
//! Linux only) and `stamp.c` as a static executable (`--stamp static`). When one cannot be
//! built, `dispatch-latency` falls back to the next (then the Rust `stamp`) and says so.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/stamp.c");
    println!("cargo:rerun-if-changed=src/stamp-bare.c");
    println!("cargo:rerun-if-env-changed=CC");
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    // Compiles `src` with `flags` into `out/<name>`; its path when that worked.
    let compile = |flags: &[&str], src: &str, name: &str| {
        let exe = out.join(name);
        Command::new(&cc)
            .args(flags)
            .arg("-o")
            .arg(&exe)
            .arg(src)
            .status()
            .is_ok_and(|s| s.success())
            .then_some(exe)
    };
    match compile(&["-O2", "-static"], "src/stamp.c", "stamp-static") {
        Some(exe) => println!("cargo:rustc-env=DAGRID_STAMP_STATIC={}", exe.display()),
        None => println!("cargo:warning=could not build a static stamp with {cc}; dispatch-latency will use the Rust one"),
    }
    let x86_64_linux = std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64")
        && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    let bare_flags = ["-O2", "-static", "-nostdlib", "-fno-stack-protector"];
    if let Some(exe) = x86_64_linux
        .then(|| compile(&bare_flags, "src/stamp-bare.c", "stamp-bare"))
        .flatten()
    {
        println!("cargo:rustc-env=DAGRID_STAMP_BARE={}", exe.display());
    }
}
