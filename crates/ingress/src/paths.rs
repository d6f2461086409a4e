//! Ingress paths: `/{service}/{handler}[/send]` and `/{object}/{key}/{handler}[/send]`, with
//! percent-encoded segments (keys may contain `/` as `%2F`).

/// A path split into the service and the segments after it (decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressPath {
    pub service: String,
    pub rest: Vec<String>,
}

pub fn parse_path(path: &str) -> Result<IngressPath, String> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let segments: Vec<&str> = trimmed.split('/').collect();
    if segments.len() < 2 || segments.len() > 4 || segments.iter().any(|s| s.is_empty()) {
        return Err(format!("bad path: {path}"));
    }
    let mut decoded = Vec::with_capacity(segments.len());
    for segment in segments {
        decoded.push(percent_decode(segment).ok_or_else(|| format!("bad path: {path}: a segment is not valid UTF-8"))?);
    }
    let service = decoded.remove(0);
    if service == "restate" {
        return Err(format!(
            "bad path: {path}: the /restate/ API paths are not supported by this server yet"
        ));
    }
    Ok(IngressPath { service, rest: decoded })
}

/// Decodes `%XX` escapes; `None` if the result is not UTF-8 or an escape is malformed.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_decoded_segments() {
        assert_eq!(
            parse_path("/Counter/k%20x%2Fy/add/send"),
            Ok(IngressPath {
                service: "Counter".into(),
                rest: vec!["k x/y".into(), "add".into(), "send".into()]
            })
        );
        assert!(parse_path("/Greeter").is_err());
        assert!(parse_path("/a/b/c/d/e").is_err());
        assert!(parse_path("/a//b").is_err());
        assert!(parse_path("/a/%ff").is_err());
    }
}
