//! fog's criterion benchmarks live in `benches/`; run them with
//! `cargo bench -p fog-benches`. Figures and the commands that produced them are in
//! docs/performance.md.

pub mod pi;
