//! x86-64 guest set-up.
