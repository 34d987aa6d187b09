//! The crate's dependency order, checked: every `crate::` path in a module's (non-test) source
//! must name a module listed before it in [`ORDER`], so no module cycle can creep back in.
//! docs/vmm.md explains the order; `super::` paths (a module and its parent) are not checked.
use std::path::Path;

/// Lowest first. A file belongs to the longest entry that prefixes its module path.
const ORDER: &[&str] = &[
    "arch",
    "guest_abi",
    "guest_images",
    "arch::x86_64::layout",
    "memory",
    "interrupts",
    "seccomp",
    "background",
    "exit",
    "arch::x86_64::unemulated",
    "arch::x86_64",
    "pci",
    "vcpu",
    "bench",
    "devices::console",
    "devices::i8042",
    "devices::serial",
    "devices::testdev",
    "devices::rtc",
    "devices::acpi_sleep",
    "devices",
    "devices::pci_testdev",
    "devices::ivshmem",
    // The virtio-pci transport knows no backend; vhost-user devices plug into it.
    "devices::virtio_pci",
    "devices::vhost_user",
    // The ACPI tables describe the legacy devices (their ports and IRQs).
    "arch::x86_64::acpi",
    "vm",
    // The Linux loader reads RAM and vCPUs from the `Vm` it boots.
    "arch::x86_64::linux",
];

/// Index in ORDER of the module `path` (`a::b::c`) belongs to.
fn layer(path: &str) -> Option<usize> {
    ORDER
        .iter()
        .enumerate()
        .filter(|(_, m)| path == **m || path.starts_with(&format!("{m}::")))
        .max_by_key(|(_, m)| m.len())
        .map(|(i, _)| i)
}

fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "tests" {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs")
            && !["lib.rs", "main.rs", "tests.rs", "layering.rs"].contains(&&*name)
        {
            out.push(path);
        }
    }
}

/// The `crate::a::b` paths in `source` (identifiers after `crate::`, up to the first non-path
/// character).
fn crate_paths(source: &str) -> Vec<String> {
    source
        .match_indices("crate::")
        .map(|(at, _)| {
            source[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect::<String>()
                .trim_end_matches(':')
                .to_string()
        })
        .collect()
}

#[test]
fn modules_only_use_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let own = layer(&module).unwrap_or_else(|| panic!("{module} is missing from ORDER"));
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for path in crate_paths(code) {
            match layer(&path) {
                Some(target) if target < own || ORDER[target] == ORDER[own] => {}
                _ => violations.push(format!("{module} uses crate::{path}")),
            }
        }
    }
    assert!(
        violations.is_empty(),
        "upward dependencies: {violations:#?}"
    );
}

#[test]
fn the_check_sees_an_upward_path() {
    assert!(layer("vcpu").unwrap() < layer("vm").unwrap());
    assert_eq!(crate_paths("use crate::vm::{Vm, X};"), ["vm"]);
    assert_eq!(crate_paths("x: crate::pci::PciBus,"), ["pci::PciBus"]);
    assert!(layer("vm").unwrap() > layer("devices::testdev").unwrap());
}
