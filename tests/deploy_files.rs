//! The observability files in deploy/ and the metric catalogue in docs/metrics.md use only
//! metric names the relay really exports: the relay runs in-process in front of the
//! simulator, a little traffic with faults makes every labelled metric appear, then
//! `/metrics` is scraped and compared with every `bedrock_relay_*` name in those files.
//! (Parsing of every deploy/ file and its structure: tests/python/test_deploy_files.py.)

use crate::support;

use bedrock_relay_sim::Fault;
use std::collections::BTreeSet;
use support::canon::{self, ConverseReq};
use support::Harness;

const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{rel}")).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every `bedrock_relay_*` token in a text.
fn names_in(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"bedrock_relay_[a-z0-9_]*[a-z0-9]").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_owned()).collect()
}

/// Every PromQL expression of a Grafana dashboard (`expr` anywhere in the JSON).
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// Names in a Prometheus text exposition: families from `# HELP`/`# TYPE` lines and the
/// sample names (which add `_bucket`, `_sum`, `_count` for histograms).
fn exported(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut families = BTreeSet::new();
    let mut samples = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            families.insert(rest.split(' ').next().unwrap_or_default().to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_owned());
        }
    }
    (families, samples)
}

/// Drive traffic that touches every metric: a healed stream (interruption, resume, failed
/// attempt tokens, resume gap), a throttled first attempt (retry), a plain Converse, an
/// unsigned STS call the relay refuses itself (credential calls).
async fn scrape_after_traffic() -> String {
    let h = Harness::start().await;
    h.fault(
        "metrics-resume",
        Some(vec![1]),
        Fault::ResetAfterEvents { events: 6 },
    );
    let req = ConverseReq::new(
        MODEL,
        "Write about deltas sim:len=40 sim:tag=metrics-resume",
    );
    let out = canon::converse_stream(&h.client, &req).await;
    assert_eq!(out.error, None);
    h.fault("metrics-retry", Some(vec![1]), Fault::Status { code: 429 });
    canon::converse_text(&h.client, MODEL, "Describe sim:tag=metrics-retry")
        .await
        .expect("converse after a throttled attempt");
    let refused = crate::sim_support::send(
        h.relay.addr,
        "POST",
        "/",
        &[("content-type", "application/x-www-form-urlencoded")],
        "Action=GetCallerIdentity&Version=2011-06-15",
    )
    .await;
    assert_eq!(refused.status, 400);
    let text = h.metrics().await;
    assert!(
        h.metric(
            "bedrock_relay_stream_resumes_total",
            &[("outcome", "success")]
        )
        .await
            >= 1.0,
        "{text}"
    );
    // A 429 before the first byte is absorbed by the admission queue (waited for, not retried).
    assert!(
        h.metric("bedrock_relay_throttles_total", &[("outcome", "absorbed")])
            .await
            >= 1.0,
        "{text}"
    );
    text
}

#[tokio::test]
async fn dashboard_alerts_and_catalogue_use_only_exported_metric_names() {
    let text = scrape_after_traffic().await;
    let (families, samples) = exported(&text);
    assert!(families.len() >= 13, "{families:?}");
    let known: BTreeSet<String> = families.union(&samples).cloned().collect();

    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/bedrock-relay-dashboard.json"))
            .expect("dashboard is JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 12, "{exprs:?}");
    let files = [
        ("dashboard", exprs.join("\n")),
        ("alerts.yml", read("deploy/prometheus/alerts.yml")),
        (
            "prometheusrule.yaml",
            read("deploy/kubernetes/prometheusrule.yaml"),
        ),
        ("docs/metrics.md", read("docs/metrics.md")),
    ];
    for (file, body) in &files {
        let used = names_in(body);
        assert!(!used.is_empty(), "{file} names no metric");
        let unknown: Vec<_> = used.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses names /metrics does not have: {unknown:?}\nexported: {known:?}"
        );
    }
    // The catalogue lists every family, and the dashboard shows every family.
    let catalogued = names_in(&read("docs/metrics.md"));
    let on_dashboard = names_in(&exprs.join("\n"));
    for family in &families {
        assert!(
            catalogued.contains(family),
            "docs/metrics.md lacks {family}"
        );
        let shown = on_dashboard
            .iter()
            .any(|n| n == family || n.strip_suffix("_bucket") == Some(family.as_str()));
        assert!(shown, "the dashboard has no panel for {family}");
    }
}

/// Labels stay bounded: only these label names exist, and none carries a model id, a
/// request id or other request-derived text (the traffic above used a model id and tags).
#[tokio::test]
async fn labels_are_bounded() {
    let text = scrape_after_traffic().await;
    let re = regex::Regex::new(r#"([a-z_]+)="([^"]*)""#).unwrap();
    let allowed = [
        "operation",
        "status",
        "outcome",
        "reason",
        "strategy",
        "kind",
        "service",
        "version",
        "le",
        "family",
        "model",
        "client",
        "region",
    ];
    // Model families are a fixed set, never the model id itself.
    let families = [
        "claude", "nova", "llama", "mistral", "titan", "cohere", "ai21", "deepseek", "openai",
        "qwen", "other",
    ];
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        for c in re.captures_iter(line) {
            let (key, value) = (&c[1], &c[2]);
            assert!(allowed.contains(&key), "unexpected label {key}: {line}");
            if key == "family" {
                assert!(
                    families.contains(&value),
                    "unbounded family {value}: {line}"
                );
                continue;
            }
            // Usage by model: a base model id (bounded: the first 50 seen, then `other`), never
            // an ARN or anything else from the request.
            if key == "model" {
                assert!(
                    value == "other"
                        || (value.contains('.')
                            && !value.starts_with("arn")
                            && !value.contains("metrics-")
                            && value.len() <= 128),
                    "unbounded model label {value}: {line}"
                );
                continue;
            }
            // Inbound client identity only when inbound authentication is on.
            if key == "client" {
                assert!(
                    value == "-"
                        || value == "other"
                        || value.starts_with("key:")
                        || value.starts_with("token:"),
                    "unbounded client label {value}: {line}"
                );
                continue;
            }
            assert!(
                !value.contains("claude") && !value.contains("metrics-") && value.len() <= 40,
                "request-derived label value: {line}"
            );
        }
    }
}

#[test]
fn names_are_found_in_promql_and_exposition_text() {
    let used = names_in(
        "sum(rate(bedrock_relay_requests_total{status=~\"5..\"}[5m])) / x_bedrock_relay_y_ \
         histogram_quantile(0.9, bedrock_relay_resume_gap_seconds_bucket)",
    );
    assert!(used.contains("bedrock_relay_requests_total"));
    assert!(used.contains("bedrock_relay_resume_gap_seconds_bucket"));
    assert!(used.contains("bedrock_relay_y"));
    let (families, samples) = exported(
        "# HELP bedrock_relay_a_seconds h\n# TYPE bedrock_relay_a_seconds histogram\n\
         bedrock_relay_a_seconds_bucket{le=\"1\"} 0\nbedrock_relay_b 1\n",
    );
    assert_eq!(
        families.into_iter().collect::<Vec<_>>(),
        ["bedrock_relay_a_seconds"]
    );
    assert_eq!(
        samples.into_iter().collect::<Vec<_>>(),
        ["bedrock_relay_a_seconds_bucket", "bedrock_relay_b"]
    );
}
