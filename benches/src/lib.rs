//! benches: the criterion micro-benchmarks (`benches/pipeline.rs`) and the end-to-end comparison
//! harness (`e2e`, run as root with `cargo run --release -p benches --bin e2e`).

pub mod e2e;
