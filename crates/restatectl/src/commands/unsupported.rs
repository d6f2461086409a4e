//! Restate's `restatectl completions …` and `storage compact`: accepted, and refused with what
//! restate-rs offers instead.

use clap::Subcommand;

const SHELLS: [&str; 5] = ["bash", "elvish", "fish", "powershell", "zsh"];

#[derive(Debug, Subcommand)]
pub(crate) enum CompletionsCommand {
    /// Generate completions to stdout (refused: not built into restate-rs's restatectl).
    Generate {
        #[arg(value_parser = SHELLS)]
        shell: Option<String>,
    },
    /// Install completions (refused: not built into restate-rs's restatectl).
    Install {
        #[arg(value_parser = SHELLS)]
        shell: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum StorageCommand {
    /// Trigger RocksDB compaction (refused: restate-rs nodes offer no manual compaction).
    Compact {
        #[arg(short = 'd', long, value_delimiter = ',')]
        database: Vec<String>,
        #[arg(short = 'n', long, value_delimiter = ',')]
        node: Vec<String>,
        #[arg(long, default_value = "30m")]
        timeout: String,
        #[arg(
            long,
            default_value = "if-have-compaction-filter",
            value_parser = ["skip", "if-have-compaction-filter", "force", "force-optimized"]
        )]
        bottommost_level_compaction: String,
        #[arg(long)]
        recalculate_level: bool,
    },
}

pub(crate) fn completions(command: CompletionsCommand) -> anyhow::Result<()> {
    let (verb, shell) = match command {
        CompletionsCommand::Generate { shell } => ("generate", shell),
        CompletionsCommand::Install { shell } => ("install", shell),
    };
    let shell = shell.map(|s| format!(" {s}")).unwrap_or_default();
    anyhow::bail!(
        "`completions {verb}{shell}`: shell completions are not built into restate-rs's restatectl (it does not ship \
         a completion generator); use `restatectl help <command>` or `restatectl <command> --help` for the commands \
         and their flags"
    )
}

pub(crate) fn storage(command: StorageCommand) -> anyhow::Result<()> {
    let StorageCommand::Compact { .. } = command;
    anyhow::bail!(
        "`storage compact`: restate-rs nodes offer no manual compaction: their stores compact in the background. To \
         shrink a log's storage, trim it (`restatectl logs trim <LOG_ID> --trim-point <LSN>`, or `restatectl \
         snapshots create --trim-log` to trim below fresh snapshots)"
    )
}
