//! `service_upstreams`: endpoint overrides for the AWS services other than Bedrock that the
//! relay talks to (the SDK's credential calls it passes on, and services it forwards with
//! `forward_other_services`), for tests and private endpoints.
//!
//! Sources, merged per service: the `[service_upstreams]` table of the file (`sts = "URL"`),
//! then `--service-upstream SERVICE=URL` (repeatable) or `BEDROCK_RELAY_SERVICE_UPSTREAM`
//! (comma-separated `SERVICE=URL` pairs). Keys are `sts`, `sso` (the IAM Identity Center
//! portal), `sso-oidc`, or any other service's signing name.

use super::parse::{self, Problems, Raw};
use std::collections::{BTreeMap, HashMap};

const CLI_ORIGIN: &str = "--service-upstream / BEDROCK_RELAY_SERVICE_UPSTREAM";

/// Validate and merge the file's table and the flag's pairs (the flag wins per service).
pub(crate) fn resolve(
    file: Option<&HashMap<String, String>>,
    origin: &str,
    cli: &[String],
    problems: &mut Problems,
) -> BTreeMap<String, http::Uri> {
    let mut entries: Vec<(String, Raw)> = Vec::new();
    let mut from_file: Vec<_> = file.into_iter().flatten().collect();
    from_file.sort();
    for (service, url) in from_file {
        entries.push((service.clone(), Raw::new(url, origin)));
    }
    for pair in cli.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((service, url)) => {
                entries.push((service.trim().to_string(), Raw::new(url.trim(), CLI_ORIGIN)))
            }
            None => problems.push(format!(
                "service_upstreams: expected SERVICE=URL, like sts=http://127.0.0.1:9000 (value {pair:?} from {CLI_ORIGIN})"
            )),
        }
    }
    let mut out = BTreeMap::new();
    for (service, raw) in entries {
        let key = format!("service_upstreams.{service}");
        if let Err(e) = check_service(&service) {
            problems.push(format!("{key}: {e} (from {})", raw.origin));
            continue;
        }
        if let Some(uri) =
            problems.parse(&key, Some(&raw), None, |t| parse::upstream_uri(t).map(Some))
        {
            out.insert(service, uri);
        }
    }
    out
}

fn check_service(service: &str) -> Result<(), String> {
    if service.is_empty()
        || !service
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(
            "invalid service name: lowercase letters, digits and dashes, like sts, sso, sso-oidc"
                .into(),
        );
    }
    match service {
        "bedrock" | "bedrock-runtime" => {
            Err("Bedrock Runtime's endpoint is set by upstream".into())
        }
        "bedrock-agent-runtime" => {
            Err("Bedrock Agent Runtime's endpoint is set by agent_upstream".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_pairs_override_the_file_per_service() {
        let mut p = Problems::default();
        let file = HashMap::from([
            ("sts".to_string(), "http://file:1".to_string()),
            ("sso".to_string(), "https://portal.example".to_string()),
        ]);
        let m = resolve(
            Some(&file),
            "config file t.toml",
            &["sts=http://127.0.0.1:9000".into()],
            &mut p,
        );
        assert!(p.0.is_empty(), "{:?}", p.0);
        assert_eq!(m["sts"].to_string(), "http://127.0.0.1:9000/");
        assert_eq!(m["sso"].to_string(), "https://portal.example/");
    }

    #[test]
    fn every_bad_entry_is_reported() {
        let mut p = Problems::default();
        let m = resolve(
            None,
            "",
            &[
                "sts".into(),
                "STS=http://x".into(),
                "sso=ftp://x".into(),
                "bedrock-runtime=http://x".into(),
            ],
            &mut p,
        );
        assert!(m.is_empty());
        assert_eq!(p.0.len(), 4, "{:?}", p.0);
        assert!(p.0[0].contains("SERVICE=URL"), "{}", p.0[0]);
        assert!(p.0[1].contains("invalid service name"), "{}", p.0[1]);
        assert!(p.0[2].contains("scheme"), "{}", p.0[2]);
        assert!(p.0[3].contains("upstream"), "{}", p.0[3]);
    }
}
