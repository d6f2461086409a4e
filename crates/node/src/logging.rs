use restate_config::{Configuration, LogFormat};
use tracing_subscriber::EnvFilter;

/// Sets up tracing from `log-filter` (which `RUST_LOG` overrides) and `log-format`.
pub(crate) fn init(config: &Configuration) -> Result<(), String> {
    let filter = EnvFilter::try_new(&config.log_filter)
        .map_err(|e| format!("invalid value for key `log-filter` (`{}`): {e}", config.log_filter))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // A log line that cannot be written (the disk holding the log is full) is dropped; by
        // default the subscriber reports it with `eprintln!`, which panics the task that logged
        // when stderr is on the same full disk.
        .log_internal_errors(false)
        .with_ansi(!config.log_disable_ansi_codes && std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let result = match config.log_format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Compact => builder.compact().try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
}
