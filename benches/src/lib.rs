//! Benchmarks and load tools for steep-repl. Results and the commands that
//! produced them are in docs/BENCHMARKS.md.
