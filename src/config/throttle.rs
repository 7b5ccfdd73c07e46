//! `[throttle]`, `[spillover]` and `[region_upstreams]`: the admission queue per Bedrock
//! quota and spillover to other regions.
//!
//! Sources: `throttle.max_wait` / `--throttle-max-wait` / `BEDROCK_RELAY_THROTTLE_MAX_WAIT`
//! (a scalar, through the common path), `throttle.max_waiters`; `spillover.regions` and
//! `--spillover-region REGION` (repeatable; `BEDROCK_RELAY_SPILLOVER_REGION`, comma-separated:
//! the flag's list replaces the file's), `[[spillover.models]]` (per-model region lists and
//! the id to use in each region); `[region_upstreams]` and `--region-upstream REGION=URL`
//! (repeatable; `BEDROCK_RELAY_REGION_UPSTREAM`, comma-separated pairs; the flag wins per
//! region).

use super::parse::{self, Problems, Raw};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const SPILL_ORIGIN: &str = "--spillover-region / BEDROCK_RELAY_SPILLOVER_REGION";
const REGION_ORIGIN: &str = "--region-upstream / BEDROCK_RELAY_REGION_UPSTREAM";

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct ThrottleFile {
    pub max_wait: Option<String>,
    pub max_waiters: Option<u64>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpilloverFile {
    pub regions: Option<Vec<String>>,
    pub models: Option<Vec<SpilloverModelFile>>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpilloverModelFile {
    /// Regex over the model id as the client sent it.
    pub model: String,
    pub regions: Vec<String>,
    /// The id to send in a region instead (an inference profile of that geography).
    #[serde(default)]
    pub ids: HashMap<String, String>,
}

/// One `[[spillover.models]]` entry: the first whose regex matches the model id wins.
#[derive(Debug, Clone)]
pub struct SpilloverModel {
    pub model: regex::Regex,
    pub regions: Vec<String>,
    /// Region → the model id to send there (default: the id as sent).
    pub ids: BTreeMap<String, String>,
}

/// Where requests may spill over to.
#[derive(Debug, Clone, Default)]
pub struct SpilloverSettings {
    /// For every model without its own entry, in order.
    pub regions: Vec<String>,
    pub models: Vec<SpilloverModel>,
    /// Endpoint overrides per region (tests, private endpoints).
    pub region_upstreams: BTreeMap<String, http::Uri>,
}

impl SpilloverSettings {
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty() && self.models.iter().all(|m| m.regions.is_empty())
    }
}

fn check_region(region: &str) -> Result<(), String> {
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!("invalid region {region:?}: like us-west-2"));
    }
    Ok(())
}

/// Validate spillover regions, per-model entries and region endpoints.
pub(crate) fn resolve(
    file: Option<&SpilloverFile>,
    upstreams: Option<&HashMap<String, String>>,
    origin: &str,
    cli_regions: &[String],
    cli_upstreams: &[String],
    p: &mut Problems,
) -> SpilloverSettings {
    let mut s = SpilloverSettings::default();
    let regions: Vec<(String, &str)> = if cli_regions.iter().any(|r| !r.trim().is_empty()) {
        cli_regions
            .iter()
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .map(|r| (r, SPILL_ORIGIN))
            .collect()
    } else {
        file.and_then(|f| f.regions.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r, origin))
            .collect()
    };
    for (r, from) in regions {
        match check_region(&r) {
            Ok(()) if !s.regions.contains(&r) => s.regions.push(r),
            Ok(()) => {}
            Err(e) => p.push(format!("spillover.regions: {e} (from {from})")),
        }
    }
    for m in file.and_then(|f| f.models.clone()).unwrap_or_default() {
        let re = p.parse(
            "spillover.models.model",
            Some(&Raw::new(&m.model, origin)),
            None,
            |t| parse::regex(t).map(Some),
        );
        for r in m.regions.iter().chain(m.ids.keys()) {
            if let Err(e) = check_region(r) {
                p.push(format!("spillover.models.regions: {e} (from {origin})"));
            }
        }
        if let Some(model) = re {
            s.models.push(SpilloverModel {
                model,
                regions: m.regions,
                ids: m.ids.into_iter().collect(),
            });
        }
    }
    let mut entries: Vec<(String, Raw)> = Vec::new();
    let mut from_file: Vec<_> = upstreams.into_iter().flatten().collect();
    from_file.sort();
    for (region, url) in from_file {
        entries.push((region.clone(), Raw::new(url, origin)));
    }
    for pair in cli_upstreams
        .iter()
        .map(|x| x.trim())
        .filter(|x| !x.is_empty())
    {
        match pair.split_once('=') {
            Some((region, url)) => {
                entries.push((region.trim().to_owned(), Raw::new(url.trim(), REGION_ORIGIN)))
            }
            None => p.push(format!(
                "region_upstreams: expected REGION=URL, like us-west-2=http://127.0.0.1:9001 (value {pair:?} from {REGION_ORIGIN})"
            )),
        }
    }
    for (region, raw) in entries {
        let key = format!("region_upstreams.{region}");
        if let Err(e) = check_region(&region) {
            p.push(format!("{key}: {e} (from {})", raw.origin));
            continue;
        }
        if let Some(uri) = p.parse(&key, Some(&raw), None, |t| parse::upstream_uri(t).map(Some)) {
            s.region_upstreams.insert(region, uri);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_replace_file_regions_and_win_per_region_endpoint() {
        let mut p = Problems::default();
        let file = SpilloverFile {
            regions: Some(vec!["eu-west-1".into()]),
            models: Some(vec![SpilloverModelFile {
                model: "claude".into(),
                regions: vec!["us-east-2".into()],
                ids: HashMap::from([("us-east-2".into(), "us.anthropic.x".into())]),
            }]),
        };
        let ups = HashMap::from([("us-west-2".to_string(), "http://file:1".to_string())]);
        let s = resolve(
            Some(&file),
            Some(&ups),
            "config file t.toml",
            &["us-west-2".into()],
            &["us-west-2=http://127.0.0.1:9001".into()],
            &mut p,
        );
        assert!(p.0.is_empty(), "{:?}", p.0);
        assert_eq!(s.regions, ["us-west-2"]);
        assert_eq!(s.models[0].ids["us-east-2"], "us.anthropic.x");
        assert_eq!(
            s.region_upstreams["us-west-2"].to_string(),
            "http://127.0.0.1:9001/"
        );
    }

    #[test]
    fn every_bad_entry_is_reported() {
        let mut p = Problems::default();
        resolve(
            None,
            None,
            "",
            &["US WEST".into()],
            &["us-west-2".into(), "eu-west-1=ftp://x".into()],
            &mut p,
        );
        assert_eq!(p.0.len(), 3, "{:?}", p.0);
    }
}

/// How the admission queue behaves (`[throttle]`).
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    /// Longest a request may wait for its quota in all; zero turns absorption off.
    pub max_wait: Duration,
    /// Requests that may wait per quota; more are answered 429 at once.
    pub max_waiters: usize,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            max_wait: Duration::from_secs(20),
            max_waiters: 1024,
        }
    }
}
