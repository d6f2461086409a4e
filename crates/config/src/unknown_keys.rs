//! Finds keys that no option consumes, and suggests the closest known key.

use serde::de::IntoDeserializer;
use serde_json::Value as Json;

use crate::options::Configuration;

/// Keys of `table` that [`Configuration`] does not know, as dotted paths.
pub(crate) fn unknown_keys(table: &toml::Table) -> Vec<String> {
    let mut unknown = Vec::new();
    let deserializer = toml::Value::Table(table.clone()).into_deserializer();
    // A value of the wrong type is reported by the real load; here only names matter.
    let _ = serde_ignored::deserialize(deserializer, |path| unknown.push(path.to_string())).map(|_: Configuration| ());
    unknown
}

/// The closest known key at the same level as `dotted_path`, if one is close enough to be
/// a likely typo.
pub(crate) fn suggest(dotted_path: &str) -> Option<String> {
    let defaults = serde_json::to_value(Configuration::default()).ok()?;
    let mut segments: Vec<&str> = dotted_path.split('.').collect();
    let key = segments.pop()?;
    let mut level = &defaults;
    for segment in &segments {
        level = level.get(segment)?;
    }
    let Json::Object(known) = level else { return None };
    known
        .keys()
        .map(|candidate| (strsim::damerau_levenshtein(key, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| {
            segments.push(candidate);
            segments.join(".")
        })
        .or_else(|| elsewhere(&defaults, key, &mut Vec::new()))
}

/// Where in the tree a key with exactly this name lives (a key put in the wrong section).
fn elsewhere(level: &Json, key: &str, path: &mut Vec<String>) -> Option<String> {
    let Json::Object(map) = level else { return None };
    for (name, value) in map {
        path.push(name.clone());
        if name == key {
            let found = path.join(".");
            path.pop();
            return Some(found);
        }
        if let Some(found) = elsewhere(value, key, path) {
            return Some(found);
        }
        path.pop();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_typos_with_a_suggestion() {
        let table: toml::Table =
            "node-nmae = \"a\"\n[metadata-client]\nadresses = []\n[ingress]\nbind-adress = \"x\"\n"
                .parse()
                .unwrap();
        let mut unknown = unknown_keys(&table);
        unknown.sort();
        assert_eq!(
            unknown,
            ["ingress.bind-adress", "metadata-client.adresses", "node-nmae"]
        );
        assert_eq!(suggest("node-nmae").as_deref(), Some("node-name"));
        assert_eq!(
            suggest("metadata-client.adresses").as_deref(),
            Some("metadata-client.addresses")
        );
        assert_eq!(suggest("totally-unrelated-thing"), None);
    }

    #[test]
    fn points_at_the_right_section_for_a_misplaced_key() {
        assert_eq!(
            suggest("admin.default-provider").as_deref(),
            Some("bifrost.default-provider")
        );
    }
}
