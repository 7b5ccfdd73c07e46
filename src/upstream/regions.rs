//! Bedrock Runtime endpoints of regions other than the relay's own (spillover): derived from
//! the region's name as for the primary (FIPS and China included), or the operator's
//! override (`--region-upstream REGION=URL`, `[region_upstreams]`).

use super::UpstreamError;
use http::Uri;
use std::collections::BTreeMap;

/// The bedrock-runtime endpoint of `region`: its override, else the regional endpoint.
pub fn runtime_endpoint(
    region: &str,
    fips: bool,
    overrides: &BTreeMap<String, Uri>,
) -> Result<Uri, UpstreamError> {
    match overrides.get(region) {
        Some(uri) => Ok(uri.clone()),
        None => super::regional("bedrock-runtime", region, fips),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_or_overridden() {
        let mut o = BTreeMap::new();
        assert_eq!(
            runtime_endpoint("eu-west-1", false, &o)
                .unwrap()
                .to_string(),
            "https://bedrock-runtime.eu-west-1.amazonaws.com/"
        );
        o.insert(
            "eu-west-1".to_string(),
            "http://127.0.0.1:9".parse().unwrap(),
        );
        assert_eq!(
            runtime_endpoint("eu-west-1", false, &o)
                .unwrap()
                .to_string(),
            "http://127.0.0.1:9/"
        );
        assert!(runtime_endpoint("EU WEST", false, &BTreeMap::new()).is_err());
    }
}
