//! Integration tests that watch the heap through a counting allocator
//! (`counting`): a process has one global allocator, so these get a binary
//! of their own, away from the other suites' threads.

mod counting;
mod csv_memory;
mod fuzz_corpus;
mod submission_memory;
