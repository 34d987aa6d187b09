//! ACPI tables for Linux guests (being written).
