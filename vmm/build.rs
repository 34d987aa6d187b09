//! Builds the guest programs (the separate `guest/` cargo workspace) and generates
//! `$OUT_DIR/guest_images.rs`: `IMAGES: &[(&str, &[u8])]`, one entry per program in
//! guest/src/bin, embedded with `include_bytes!`.
//!
//! The nested cargo gets a clean environment: variables the outer build sets for *this* crate
//! (CARGO_*, RUSTFLAGS, CARGO_ENCODED_RUSTFLAGS, CARGO_TARGET_DIR, RUSTC_WRAPPER...) would
//! otherwise leak into the guest build and break it (e.g. PIE flags, a shared target dir).
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let guest_dir = manifest_dir.join("../guest");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target_dir = out_dir.join("guest-target");
    println!("cargo:rerun-if-changed=../guest/src");
    // The guest compiles the VMM's layout and guest-ABI files as its own `layout` and `abi`.
    println!("cargo:rerun-if-changed=src/arch/x86_64/layout.rs");
    println!("cargo:rerun-if-changed=src/guest_abi.rs");
    // ... and virtio-ivshmem's header layout as `virtio_layout`.
    println!("cargo:rerun-if-changed=../virtio-ivshmem/src/layout.rs");
    println!("cargo:rerun-if-changed=../guest/Cargo.toml");
    println!("cargo:rerun-if-changed=../guest/.cargo/config.toml");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guest_dir)
        .args(["build", "--release", "--bins", "--target-dir"])
        .arg(&target_dir);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
            || key.starts_with("DEP_")
            || key == "TARGET"
            || key == "HOST"
            || key == "OUT_DIR"
            || key == "OPT_LEVEL"
            || key == "PROFILE"
            || key == "DEBUG"
            || key == "NUM_JOBS"
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().expect("run cargo for the guest programs");
    assert!(
        status.success(),
        "building the guest programs (guest/) failed"
    );

    let bin_dir = target_dir.join("x86_64-unknown-linux-gnu/release");
    let mut names = program_names(&guest_dir.join("src/bin"));
    names.sort();
    let mut table = String::from("/// (name, static ELF image) of every built-in guest program.\n");
    table.push_str("pub static IMAGES: &[(&str, &[u8])] = &[\n");
    for name in &names {
        let path = bin_dir.join(name);
        assert!(
            path.exists(),
            "guest program {} was not built",
            path.display()
        );
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    table.push_str("];\n");
    std::fs::write(out_dir.join("guest_images.rs"), table).unwrap();
}

fn program_names(bin_src: &Path) -> Vec<String> {
    std::fs::read_dir(bin_src)
        .expect("guest/src/bin")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            if path.extension()? == "rs" {
                Some(path.file_stem()?.to_string_lossy().into_owned())
            } else if path.is_dir() && path.join("main.rs").exists() {
                Some(path.file_name()?.to_string_lossy().into_owned())
            } else {
                None
            }
        })
        .collect()
}
