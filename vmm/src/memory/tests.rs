//! Unit tests for the memory model.
