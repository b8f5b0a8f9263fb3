//! Test support (feature `testkit`): the deterministic simulation with its
//! fault-injecting wrappers, the fuzz entry points, and the naive baseline
//! the benchmarks compare against. No Lambda compiles any of it.

pub mod baseline;
pub mod fuzzing;
pub mod simulation;
