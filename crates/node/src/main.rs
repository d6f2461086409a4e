//! `restate`: the restate-rs cluster node daemon.

use std::process::ExitCode;

/// mimalloc instead of glibc malloc: fewer instructions per invocation (malloc and free were 14 %
/// of a call's CPU) and 6–8 % more calls/s under load, at the same RSS once transparent huge
/// pages are left out (`no_thp`; with them, 11–17 MiB more). See README, "Where a call's time goes".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    restate_node::cli::main()
}
