//! `restate`: the restate-rs cluster node daemon.

use std::process::ExitCode;

fn main() -> ExitCode {
    restate_node::cli::main()
}
