//! Benchmarks and load tools for steep-repl. Results and the commands that
//! produced them are in docs/BENCHMARKS.md.

#[cfg(unix)]
pub mod echo;
#[cfg(unix)]
pub mod ipc_load;
#[cfg(unix)]
pub mod projection_mirror;
