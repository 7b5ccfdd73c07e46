//! Spillover: the other regions a model's requests may go to when its quota in the primary
//! region is saturated or the region answers 429 / 5xx before the first byte.
//!
//! A bare model id (or a `global.` / geographic profile id) is sent as it is to the other
//! region, or as the id the operator mapped for that region (`[[spillover.models]] ids`).
//! Region-bound ids never move: any ARN (provisioned throughput, custom models, imported
//! models, application inference profiles, and foundation-model ARNs, which name their
//! region). Endpoints derive from the region as for the primary; `region_upstreams`
//! overrides one (tests, private endpoints).

use crate::config::SpilloverSettings;
use bytes::Bytes;
use http::{Request, Uri};
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct Spillover {
    primary: String,
    /// The primary's bedrock-runtime base (to cut the client's path from a request's URI).
    primary_base: Option<Uri>,
    settings: SpilloverSettings,
    endpoints: HashMap<String, Uri>,
}

/// True when `model` names a resource bound to one region (an ARN of any kind).
pub fn region_bound(model: &str) -> bool {
    let m = model.trim_start_matches('/');
    m.starts_with("arn:") || m.starts_with("arn%3A") || m.starts_with("arn%3a")
}

impl Spillover {
    /// `primary_base`: where requests for `primary` go; endpoints of the other regions
    /// derive from their names (or `region_upstreams`).
    pub(crate) fn new(
        primary: &str,
        primary_base: Uri,
        fips: bool,
        settings: SpilloverSettings,
    ) -> Result<Self, crate::upstream::UpstreamError> {
        let mut endpoints = HashMap::new();
        let all = settings
            .regions
            .iter()
            .chain(settings.models.iter().flat_map(|m| m.regions.iter()));
        for region in all {
            if region != primary && !endpoints.contains_key(region) {
                let uri = crate::upstream::regions::runtime_endpoint(
                    region,
                    fips,
                    &settings.region_upstreams,
                )?;
                endpoints.insert(region.clone(), uri);
            }
        }
        Ok(Spillover {
            primary: primary.to_owned(),
            primary_base: Some(primary_base),
            settings,
            endpoints,
        })
    }

    /// No spillover region configured.
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty()
    }

    pub fn primary(&self) -> &str {
        &self.primary
    }

    /// Every region that may appear in a label: the primary and the spillover regions.
    pub fn label_regions(primary: &str, s: &SpilloverSettings) -> Vec<String> {
        let mut v = vec![primary.to_owned()];
        for r in s
            .regions
            .iter()
            .chain(s.models.iter().flat_map(|m| m.regions.iter()))
        {
            if !v.contains(r) {
                v.push(r.clone());
            }
        }
        v
    }

    /// Where `model` may be served, in order: the primary with the id as sent, then each
    /// spillover region with the id to use there. Only the primary for region-bound ids.
    pub fn candidates(&self, model: &str) -> Vec<(String, String)> {
        let mut out = vec![(self.primary.clone(), model.to_owned())];
        if region_bound(model) {
            return out;
        }
        let listed = self
            .settings
            .models
            .iter()
            .find(|m| m.model.is_match(model));
        let regions = match listed {
            Some(m) => &m.regions,
            None => &self.settings.regions,
        };
        for region in regions {
            if *region == self.primary || out.iter().any(|(r, _)| r == region) {
                continue;
            }
            let id = listed
                .and_then(|m| m.ids.get(region))
                .cloned()
                .unwrap_or_else(|| model.to_owned());
            out.push((region.clone(), id));
        }
        out
    }

    /// Point `req` (cut for the primary) at `region`, naming `id_there` instead of `model`.
    pub fn rewrite(&self, req: &mut Request<Bytes>, region: &str, model: &str, id_there: &str) {
        let (Some(base), Some(primary_base)) = (self.endpoints.get(region), &self.primary_base)
        else {
            return;
        };
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let prefix = primary_base.path().trim_end_matches('/');
        let mut rest = pq.strip_prefix(prefix).unwrap_or(&pq).to_owned();
        if id_there != model {
            rest = swap_model(&rest, id_there);
        }
        if let Ok(uri) = crate::upstream::join(base, &rest) {
            *req.uri_mut() = uri;
            req.headers_mut().remove(http::header::HOST);
        }
        if id_there != model && !rest.starts_with("/model/") {
            swap_body_model(req, id_there);
        }
    }
}

/// `/model/{id}/...` with another id.
fn swap_model(path: &str, id: &str) -> String {
    match path.strip_prefix("/model/") {
        Some(after) => {
            let tail = after.find(['/', '?']).map(|i| &after[i..]).unwrap_or("");
            format!("/model/{id}{tail}")
        }
        None => path.to_owned(),
    }
}

/// The OpenAI- and Anthropic-compatible bodies name the model in `model`.
fn swap_body_model(req: &mut Request<Bytes>, id: &str) {
    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(req.body()) {
        if v.get("model").is_some() {
            v["model"] = serde_json::Value::String(id.to_owned());
            if let Ok(b) = serde_json::to_vec(&v) {
                *req.body_mut() = Bytes::from(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SpilloverModel;

    fn spill() -> Spillover {
        let mut s = SpilloverSettings {
            regions: vec!["us-west-2".into(), "us-east-1".into()],
            ..Default::default()
        };
        s.region_upstreams
            .insert("us-west-2".into(), "http://127.0.0.1:9/p".parse().unwrap());
        s.models.push(SpilloverModel {
            model: regex::Regex::new("^us\\.anthropic").unwrap(),
            regions: vec!["eu-west-1".into()],
            ids: [(
                "eu-west-1".to_string(),
                "eu.anthropic.claude-x-v1:0".to_string(),
            )]
            .into(),
        });
        Spillover::new(
            "us-east-1",
            "http://127.0.0.1:8/".parse().unwrap(),
            false,
            s,
        )
        .unwrap()
    }

    #[test]
    fn region_bound_ids_never_move() {
        let s = spill();
        for id in [
            "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc",
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aimported-model%2Fabc",
            "arn:aws:bedrock:us-east-1:123456789012:custom-model/x",
        ] {
            assert_eq!(s.candidates(id).len(), 1, "{id}");
        }
        let c = s.candidates("anthropic.claude-sonnet-4-6-v1:0");
        assert_eq!(c.len(), 2, "the primary is not listed twice: {c:?}");
        assert_eq!(c[1].0, "us-west-2");
    }

    #[test]
    fn rewrite_points_at_the_region_and_maps_profiles() {
        let s = spill();
        let mut req = Request::new(Bytes::from_static(b"{}"));
        *req.uri_mut() = "http://127.0.0.1:8/model/anthropic.claude-x-v1:0/converse-stream"
            .parse()
            .unwrap();
        req.headers_mut()
            .insert(http::header::HOST, "127.0.0.1:8".parse().unwrap());
        s.rewrite(
            &mut req,
            "us-west-2",
            "anthropic.claude-x-v1:0",
            "anthropic.claude-x-v1:0",
        );
        assert_eq!(
            req.uri().to_string(),
            "http://127.0.0.1:9/p/model/anthropic.claude-x-v1:0/converse-stream"
        );
        assert!(req.headers().get(http::header::HOST).is_none());
        let c = s.candidates("us.anthropic.claude-x-v1:0");
        assert_eq!(
            c[1],
            ("eu-west-1".into(), "eu.anthropic.claude-x-v1:0".into())
        );
        assert_eq!(
            swap_model("/model/us.a.b:0/converse?x=1", "eu.a.b:0"),
            "/model/eu.a.b:0/converse?x=1"
        );
    }
}
