//! Kernel tests for the tensor family.
