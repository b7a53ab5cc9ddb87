//! Builds `stamp.c` as a static executable for `dispatch-latency` (its `--stamp static`
//! probe) with the C compiler that links Rust programs (`$CC`, else `cc`). When that fails
//! (no static libc), `dispatch-latency` uses the Rust `stamp` and says so.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/stamp.c");
    println!("cargo:rerun-if-env-changed=CC");
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let exe = out.join("stamp-static");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&cc)
        .args(["-O2", "-static", "-o"])
        .arg(&exe)
        .arg("src/stamp.c")
        .status()
        .is_ok_and(|s| s.success());
    if built {
        println!("cargo:rustc-env=DAGRID_STAMP_STATIC={}", exe.display());
    } else {
        println!("cargo:warning=could not build a static stamp with {cc}; dispatch-latency will use the Rust one");
    }
}
