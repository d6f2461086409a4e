//! Durations as Restate's APIs show and accept them: shown friendly (`1d`, `10m`, `500ms`),
//! accepted friendly (`5m`, `1h 30m`) or as ISO 8601 (`PT1H`).

/// A duration in the friendly form the admin API shows, e.g. `1d`, `10m`, `500ms`, `1h 30m`.
pub fn friendly_duration(millis: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let mut rest = millis;
    let mut parts = Vec::new();
    for (unit, size) in UNITS {
        if rest >= size {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    match parts.is_empty() {
        true => "0s".into(),
        false => parts.join(" "),
    }
}

/// A duration as the admin API accepts it, in milliseconds: friendly (`1h`, `30s`, `500ms`,
/// `1h 30m`, `5 hours`) or ISO 8601 (`PT1H`, `P1DT12H`, `PT0.5S`).
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let millis = match text.starts_with(['P', 'p']) {
        true => parse_iso8601_duration(text)?,
        false => humantime::parse_duration(text)
            .map_err(|error| {
                format!(
                    "cannot parse the duration '{text}' ({error}); use e.g. '1h 30m', '500ms' or ISO 8601 'PT1H30M'"
                )
            })?
            .as_millis(),
    };
    u64::try_from(millis).map_err(|_| format!("the duration '{text}' is too long"))
}

/// ISO 8601 durations with weeks, days, hours, minutes and (fractional) seconds; years and
/// months have no fixed length and are refused.
fn parse_iso8601_duration(text: &str) -> Result<u128, String> {
    let invalid = |why: &str| {
        format!("cannot parse the ISO 8601 duration '{text}': {why}; use e.g. 'PT1H30M', 'P1D' or '1h 30m'")
    };
    let body = text.get(1..).unwrap_or_default();
    if body.is_empty() {
        return Err(invalid("no value"));
    }
    let mut in_time = false;
    let mut number = String::new();
    let mut total: u128 = 0;
    let mut any = false;
    for c in body.chars() {
        match c.to_ascii_uppercase() {
            'T' if !in_time && number.is_empty() => in_time = true,
            digit @ ('0'..='9' | '.' | ',') => number.push(if digit == ',' { '.' } else { digit }),
            unit => {
                let factor: u128 = match (unit, in_time) {
                    ('W', false) => 604_800_000,
                    ('D', false) => 86_400_000,
                    ('H', true) => 3_600_000,
                    ('M', true) => 60_000,
                    ('S', true) => 1_000,
                    ('Y' | 'M', false) => return Err(invalid("years and months are not supported")),
                    _ => return Err(invalid(&format!("unexpected '{c}'"))),
                };
                let value: f64 = number.parse().map_err(|_| invalid("a number is missing"))?;
                if !value.is_finite() || value < 0.0 {
                    return Err(invalid("bad number"));
                }
                // Rounded to the millisecond.
                let millis = (value * factor as f64).round();
                if millis >= u64::MAX as f64 {
                    return Err(invalid("too long"));
                }
                total = total.saturating_add(millis as u128);
                number.clear();
                any = true;
            }
        }
    }
    if !number.is_empty() || !any {
        return Err(invalid("a unit is missing"));
    }
    Ok(total)
}
