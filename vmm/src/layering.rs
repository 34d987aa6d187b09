//! The crate's dependency order, written once ([`ORDER`]) and checked: every `crate::` path in a
//! module's (non-test) source must name a module listed before it, so no module cycle can creep
//! back in; `super::` paths (a module and its parent) are not checked. docs/vmm.md explains the
//! order floor by floor, and a test here holds its list to [`ORDER`].
use std::path::Path;

/// Lowest first. A file belongs to the longest entry that prefixes its module path.
const ORDER: &[&str] = &[
    "arch",
    "guest_abi",
    "guest_images",
    "threads",
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
    // virtio-net on the kernel's vhost-net: another server of the transport's queues.
    "devices::virtio_net",
    // The one creation path knows every device kind.
    "devices::plug",
    "vm",
    // Guest loading reads RAM and vCPUs from the `Vm` it boots; its ACPI tables describe the
    // fixed devices.
    "boot",
    "machine",
    // The command line's edge: strings into typed options.
    "options",
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

/// The modules docs/vmm.md's "Dependency order" lists, in its order: the backticked module
/// paths on its numbered lines.
fn documented_order(doc: &str) -> Vec<String> {
    let section = doc
        .split("## Dependency order")
        .nth(1)
        .expect("docs/vmm.md has a Dependency order section");
    let section = section.split("\n## ").next().unwrap_or(section);
    // A numbered line and the indented lines that continue it.
    let mut floors: Vec<String> = Vec::new();
    for line in section.lines() {
        if line
            .split('.')
            .next()
            .is_some_and(|n| n.trim().parse::<u32>().is_ok())
        {
            floors.push(line.to_string());
        } else if line.starts_with("   ") {
            if let Some(floor) = floors.last_mut() {
                floor.push_str(line);
            }
        } else if !floors.is_empty() {
            break;
        }
    }
    floors
        .iter()
        .flat_map(|line| {
            line.split('`')
                .skip(1)
                .step_by(2)
                .filter(|name| {
                    name.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':'
                    })
                })
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn docs_list_the_same_order() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/vmm.md"))
        .unwrap();
    // "arch" is only the parent of the arch floors, not a floor of its own.
    let want: Vec<&str> = ORDER.iter().copied().filter(|m| *m != "arch").collect();
    assert_eq!(
        documented_order(&doc),
        want,
        "docs/vmm.md's Dependency order and ORDER differ"
    );
}

#[test]
fn the_check_sees_an_upward_path() {
    assert!(layer("vcpu").unwrap() < layer("vm").unwrap());
    assert_eq!(crate_paths("use crate::vm::{Vm, X};"), ["vm"]);
    assert_eq!(crate_paths("x: crate::pci::PciBus,"), ["pci::PciBus"]);
    assert!(layer("vm").unwrap() > layer("devices::testdev").unwrap());
}
