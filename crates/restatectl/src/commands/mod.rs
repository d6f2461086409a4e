pub(crate) mod config;
pub(crate) mod logs;
pub(crate) mod metadata;
pub(crate) mod metadata_server;
pub(crate) mod migrate;
pub(crate) mod nodes;
pub(crate) mod partitions;
pub(crate) mod provision;
pub(crate) mod replicated_loglet;
pub(crate) mod snapshots;
pub(crate) mod sql;
pub(crate) mod status;
pub(crate) mod unsupported;

/// Asks the operator to confirm (yes without asking with `--yes`, or when CI is set). The
/// answer is a line on stdin, from the terminal or piped (`echo y | restatectl …`); no answer
/// at all (stdin closed) is refused with a hint at `--yes`.
pub(crate) fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if crate::settings::get().yes {
        return Ok(true);
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    let read = std::io::stdin().lock().read_line(&mut answer)?;
    if !std::io::stdin().is_terminal() {
        // A piped answer is not echoed: end the prompt's line.
        println!("{}", answer.trim());
    }
    if read == 0 {
        anyhow::bail!("{question} needs confirmation, but stdin gave no answer: answer y, or pass --yes");
    }
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// Refuses partition ids that are not among `existing` (the partition table's), naming them
/// and the ids the table has.
pub(crate) fn ensure_partitions_exist(wanted: &[u32], existing: &[u32]) -> anyhow::Result<()> {
    let unknown: Vec<String> = wanted
        .iter()
        .filter(|id| !existing.contains(id))
        .map(u32::to_string)
        .collect();
    if !unknown.is_empty() {
        anyhow::bail!(
            "no partition {} in the partition table (it has {} partitions, 0 to {})",
            unknown.join(", "),
            existing.len(),
            existing.len().saturating_sub(1)
        );
    }
    Ok(())
}

/// Ids and ranges as Restate's restatectl takes them: `0`, `1-4`, `2,5-6` (inclusive ranges).
pub(crate) fn parse_id_ranges(items: &[String], what: &str) -> anyhow::Result<Vec<u32>> {
    let mut ids = std::collections::BTreeSet::new();
    for item in items
        .iter()
        .flat_map(|i| i.split(','))
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        let parse = |text: &str| {
            text.trim()
                .parse::<u32>()
                .map_err(|_| anyhow::anyhow!("`{item}` is not a {what} id or range; expected e.g. 0, 3 or 1-4"))
        };
        match item.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (parse(from)?, parse(to)?);
                if from > to {
                    anyhow::bail!("`{item}`: the range of {what} ids is empty ({from} > {to})");
                }
                if to - from > 65_535 {
                    anyhow::bail!("`{item}`: the range of {what} ids is too large");
                }
                ids.extend(from..=to);
            }
            None => {
                ids.insert(parse(item)?);
            }
        }
    }
    Ok(ids.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_partitions_are_named_with_the_tables_range() {
        assert!(ensure_partitions_exist(&[0, 2], &[0, 1, 2]).is_ok());
        let error = ensure_partitions_exist(&[1, 5, 7], &[0, 1, 2]).unwrap_err().to_string();
        assert_eq!(
            error,
            "no partition 5, 7 in the partition table (it has 3 partitions, 0 to 2)"
        );
    }

    #[test]
    fn id_ranges() {
        let items = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_id_ranges(&items(&["0", "1-4"]), "log").unwrap(),
            vec![0, 1, 2, 3, 4]
        );
        assert_eq!(parse_id_ranges(&items(&["5,2-3"]), "log").unwrap(), vec![2, 3, 5]);
        assert!(
            parse_id_ranges(&items(&["4-1"]), "log")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(
            parse_id_ranges(&items(&["x"]), "log")
                .unwrap_err()
                .to_string()
                .contains("expected e.g.")
        );
    }
}
