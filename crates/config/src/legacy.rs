//! Keys from older Restate docs, mapped onto the current tree so old files keep working,
//! each with one warning that names the key to use instead.

use toml::{Table, Value};

/// Rewrites legacy keys of one source (a file or the environment) in place and returns
/// one warning per key it touched.
pub(crate) fn map_legacy_keys(table: &mut Table, source: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut warn = |old: &str, new: &str| {
        warnings.push(format!("{source}: `{old}` is a legacy key; {new}"));
    };

    rename_section(table, "metadata-store", "metadata-server", &mut warn);
    rename_section(table, "metadata-store-client", "metadata-client", &mut warn);
    if let Some(value) = table.remove("allow-bootstrap") {
        table.entry("auto-provision").or_insert(value);
        warn("allow-bootstrap", "use `auto-provision` instead (mapped)");
    }

    if let Some(kind) = take_key(table, &["metadata-server"], "type") {
        let kind = kind.as_str().unwrap_or_default().to_owned();
        warn(
            "[metadata-server] type",
            &format!(
                "it was removed: the built-in metadata store is always replicated (one Raft member on a single node), \
                 so `{kind}` needs no key; choose a store with `[metadata-client] type` (ignored)"
            ),
        );
    }

    if let Some(address) = take_key(table, &["metadata-client"], "address") {
        if let Some(client) = section_mut(table, &["metadata-client"]) {
            client.entry("addresses").or_insert(Value::Array(vec![address]));
        }
        warn("[metadata-client] address", "use `addresses = [..]` instead (mapped)");
    }

    let legacy_replication = [
        (
            &["bifrost"][..],
            "default-log-replication",
            "[bifrost] default-log-replication",
        ),
        (
            &["bifrost", "replicated-loglet"][..],
            "default-log-replication",
            "[bifrost.replicated-loglet] default-log-replication",
        ),
        (
            &["admin"][..],
            "default-partition-replication",
            "[admin] default-partition-replication",
        ),
    ];
    for (section, key, old) in legacy_replication {
        let Some(value) = take_key(table, section, key) else {
            continue;
        };
        if table.contains_key("default-replication") {
            warn(old, "`default-replication` is also set and wins; remove the legacy key");
        } else {
            table.insert("default-replication".into(), value);
            warn(
                old,
                "use the top-level `default-replication` instead, which sets log and partition replication (mapped)",
            );
        }
    }

    for (section, old) in [
        ("admin", "advertised-admin-endpoint"),
        ("ingress", "advertised-ingress-endpoint"),
    ] {
        let Some(value) = take_key(table, &[section], old) else {
            continue;
        };
        if let Some(options) = section_mut(table, &[section]) {
            options.entry("advertised-address").or_insert(value);
        }
        warn(
            &format!("[{section}] {old}"),
            &format!("use `[{section}] advertised-address` instead (mapped)"),
        );
    }

    warnings
}

/// The table at `path` (e.g. `["bifrost", "replicated-loglet"]`), if it exists.
fn section_mut<'a>(table: &'a mut Table, path: &[&str]) -> Option<&'a mut Table> {
    path.iter()
        .try_fold(table, |level, name| level.get_mut(*name).and_then(Value::as_table_mut))
}

/// Removes `key` from the table at `path` and returns its value.
fn take_key(table: &mut Table, path: &[&str], key: &str) -> Option<Value> {
    section_mut(table, path)?.remove(key)
}

fn rename_section(table: &mut Table, old: &str, new: &str, warn: &mut impl FnMut(&str, &str)) {
    let Some(value) = table.remove(old) else { return };
    match (value, table.get_mut(new)) {
        (Value::Table(old_table), Some(Value::Table(current))) => {
            for (key, value) in old_table {
                current.entry(key).or_insert(value);
            }
        }
        (value, _) => {
            table.insert(new.to_owned(), value);
        }
    }
    warn(&format!("[{old}]"), &format!("use `[{new}]` instead (mapped)"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(text: &str) -> (Table, Vec<String>) {
        let mut table: Table = text.parse().unwrap();
        let warnings = map_legacy_keys(&mut table, "test.toml");
        (table, warnings)
    }

    #[test]
    fn legacy_keys_map_to_current_keys_with_one_warning_each() {
        let (table, warnings) = mapped(
            r#"
            [metadata-store]
            type = "replicated"
            [bifrost.replicated-loglet]
            default-log-replication = 2
            [admin]
            advertised-admin-endpoint = "http://a:9070/"
            "#,
        );
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("`default-replication`")));
        assert_eq!(table["default-replication"].as_integer(), Some(2));
        assert!(table["metadata-server"].as_table().unwrap().is_empty());
        let admin = table["admin"].as_table().unwrap();
        assert_eq!(admin["advertised-address"].as_str(), Some("http://a:9070/"));
    }

    #[test]
    fn current_key_wins_over_legacy_key() {
        let (table, warnings) = mapped("default-replication = 3\n[bifrost]\ndefault-log-replication = 2\n");
        assert_eq!(table["default-replication"].as_integer(), Some(3));
        assert!(warnings[0].contains("wins"));
    }
}
