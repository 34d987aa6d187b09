//! Architecture-specific guest set-up. Only x86-64 exists.
pub mod x86_64;
