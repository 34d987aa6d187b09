//! Moved to the harness library (`harness::vm`). This alias keeps test files written against
//! the old module (`mod ivshmem_support; use ivshmem_support::*;`) building until they are
//! merged; new tests say `use harness::vm::*;`. Delete once nothing declares the module.

pub use harness::vm::*;
