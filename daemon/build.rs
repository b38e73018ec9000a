//! Records what `anomalyd_build_info` reports: the git commit the binary
//! was built from and the compiler's version. Either is "unknown" when it
//! cannot be found (a source tarball, an unusual toolchain).

use std::path::Path;
use std::process::Command;

fn main() {
    let commit = output("git", &["rev-parse", "--short=12", "HEAD"]);
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = output(&rustc, &["--version"]);
    println!("cargo:rustc-env=ANOMALYD_COMMIT={commit}");
    println!("cargo:rustc-env=ANOMALYD_RUSTC={rustc}");
    // Rebuild the label when the commit changes.
    let git = Path::new("../.git");
    if git.join("HEAD").exists() {
        println!("cargo:rerun-if-changed=../.git/HEAD");
        if let Ok(head) = std::fs::read_to_string(git.join("HEAD"))
            && let Some(reference) = head.trim().strip_prefix("ref: ")
        {
            // A loose ref, or the packed ones (a path that does not exist
            // would rerun this script on every build).
            if git.join(reference).exists() {
                println!("cargo:rerun-if-changed=../.git/{reference}");
            } else if git.join("packed-refs").exists() {
                println!("cargo:rerun-if-changed=../.git/packed-refs");
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// The first line of what `program args` prints, or "unknown".
fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.lines().next().map(str::to_owned))
        .filter(|line| !line.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
