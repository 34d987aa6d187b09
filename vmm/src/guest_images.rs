//! Guest programs built into the vmm binary (`--guest builtin:NAME`). `build.rs` builds the
//! `guest/` workspace and generates the table included here.

include!(concat!(env!("OUT_DIR"), "/guest_images.rs"));

/// The built-in program called `name`.
pub fn find(name: &str) -> Option<&'static [u8]> {
    IMAGES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, image)| *image)
}

/// Names of all built-in programs.
pub fn names() -> impl Iterator<Item = &'static str> {
    IMAGES.iter().map(|(n, _)| *n)
}
