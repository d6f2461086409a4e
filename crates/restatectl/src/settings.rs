//! Options that apply to every command (`--yes`, `-q`/`-v`, `--table-style`, `--time-format`),
//! set once from the command line.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum TableStyle {
    /// Columns separated by spaces.
    #[default]
    Compact,
    /// Every cell framed.
    Borders,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum TimeFormat {
    /// Relative to now, e.g. `3s ago`.
    #[default]
    Human,
    /// e.g. `2025-01-31T12:00:00Z`.
    Iso8601,
    /// e.g. `Fri, 31 Jan 2025 12:00:00 +0000`.
    Rfc2822,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Settings {
    /// Answer "yes" to every confirmation.
    pub(crate) yes: bool,
    /// `-v` count minus `-q` count: below 0 hides notes, above 0 prints which node answered.
    pub(crate) verbosity: i8,
    pub(crate) table_style: TableStyle,
    pub(crate) time_format: TimeFormat,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

pub(crate) fn init(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

pub(crate) fn get() -> Settings {
    SETTINGS.get().copied().unwrap_or_default()
}

/// A note on stderr (hidden by `-q`).
pub(crate) fn note(text: &str) {
    if get().verbosity >= 0 {
        eprintln!("note: {text}");
    }
}

/// A detail on stderr, only with `-v`.
pub(crate) fn verbose(text: &str) {
    if get().verbosity > 0 {
        eprintln!("debug: {text}");
    }
}

/// A moment that lies `ago` in the past, in the chosen `--time-format`.
pub(crate) fn format_ago(ago: Option<Duration>) -> String {
    let Some(ago) = ago else {
        return "-".to_owned();
    };
    match get().time_format {
        TimeFormat::Human if ago < Duration::from_secs(1) => format!("{} ms ago", ago.as_millis()),
        TimeFormat::Human => format!("{} ago", humantime::format_duration(Duration::from_secs(ago.as_secs()))),
        _ => format_time(SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH)),
    }
}

/// An RFC 3339 timestamp (as the nodes report them) in the chosen `--time-format`; text that
/// is not one is shown as it is.
pub(crate) fn format_timestamp(text: &str) -> String {
    match humantime::parse_rfc3339_weak(text) {
        Ok(time) => match get().time_format {
            TimeFormat::Human => format_ago(Some(SystemTime::now().duration_since(time).unwrap_or_default())),
            _ => format_time(time),
        },
        Err(_) => text.to_owned(),
    }
}

/// A point in time as ISO 8601 or RFC 2822 (UTC); `human` gets ISO 8601 too (callers that
/// want relative times use [`format_ago`]).
pub(crate) fn format_time(time: SystemTime) -> String {
    match get().time_format {
        TimeFormat::Rfc2822 => rfc2822(time),
        TimeFormat::Human | TimeFormat::Iso8601 => {
            let seconds = time.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
        }
    }
}

fn rfc2822(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let days = (seconds / 86_400) as i64;
    let in_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let month_name = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "{weekday}, {day:02} {month_name} {year} {:02}:{:02}:{:02} +0000",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31), after Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2822_dates() {
        assert_eq!(rfc2822(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        // 2025-01-31T12:34:56Z
        let time = UNIX_EPOCH + Duration::from_secs(1_738_326_896);
        assert_eq!(rfc2822(time), "Fri, 31 Jan 2025 12:34:56 +0000");
        // 2024-02-29T00:00:00Z
        let time = UNIX_EPOCH + Duration::from_secs(1_709_164_800);
        assert_eq!(rfc2822(time), "Thu, 29 Feb 2024 00:00:00 +0000");
    }
}
