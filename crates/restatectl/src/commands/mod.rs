pub(crate) mod config;
pub(crate) mod logs;
pub(crate) mod metadata;
pub(crate) mod metadata_server;
pub(crate) mod migrate;
pub(crate) mod nodes;
pub(crate) mod partitions;
pub(crate) mod provision;
pub(crate) mod snapshots;
pub(crate) mod status;

/// Asks the operator to confirm on the terminal; refuses when stdin is not a terminal.
pub(crate) fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{question} needs confirmation, but stdin is not a terminal: pass --yes");
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}
