//! The `appstack` binary: wiring only.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// jemalloc: it re-verifies stacks after a restart with less CPU than
/// glibc's allocator and, returning freed pages after a second (the image's
/// `_RJEM_MALLOC_CONF`), keeps less resident (measured on the benchmark
/// page, docs/src/performance/benchmark.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    appstack::cli::main(appstack::cli::Cli::parse())
}
