//! Tests of config loading: merge order, all-errors-at-once, the shipped example file.

use super::*;
use std::io::Write;
use std::time::Duration;

fn write_toml(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("tempfile");
    f.write_all(text.as_bytes()).expect("write");
    f
}

fn no_region() -> Option<String> {
    None
}

#[test]
fn defaults_with_region_only() {
    let args = ServeArgs {
        region: Some("eu-west-1".into()),
        ..Default::default()
    };
    let s = load_with(&args, no_region).expect("valid");
    assert_eq!(s.region, "eu-west-1");
    assert_eq!(s.listen, "127.0.0.1:8790".parse().unwrap());
    assert_eq!(s.admin_listen, "127.0.0.1:8791".parse().unwrap());
    assert_eq!(s.stall_timeout, Duration::from_secs(300));
    assert_eq!(s.max_attempts, 4);
    assert_eq!(s.max_request_body, 20 * 1024 * 1024);
    assert_eq!(s.resume.max_resumes, 3);
    assert!(s.resume.replay);
    assert!(s.upstream.is_none());
    assert_eq!(s.worker_threads, 0, "one per CPU by default");
}

#[test]
fn file_then_cli_precedence() {
    let f = write_toml(
        "listen = \"127.0.0.1:7000\"\nregion = \"us-west-2\"\nmax_attempts = 2\nstall_timeout = \"10s\"\nworker_threads = 1\n",
    );
    let args = ServeArgs {
        config: Some(f.path().to_path_buf()),
        max_attempts: Some("7".into()),
        ..Default::default()
    };
    let s = load_with(&args, || Some("fallback-1".into())).expect("valid");
    assert_eq!(s.listen.port(), 7000, "file beats default");
    assert_eq!(s.region, "us-west-2", "file beats region fallback");
    assert_eq!(s.max_attempts, 7, "CLI beats file");
    assert_eq!(s.stall_timeout, Duration::from_secs(10));
    assert_eq!(s.worker_threads, 1);
}

#[test]
fn region_fallback_used_when_unset() {
    let s = load_with(&ServeArgs::default(), || Some("ap-south-1".into())).expect("valid");
    assert_eq!(s.region, "ap-south-1");
}

#[test]
fn missing_region_is_an_error() {
    let e = load_with(&ServeArgs::default(), no_region).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert!(e.0[0].starts_with("region:"), "{e}");
}

#[test]
fn every_problem_reported_at_once() {
    let f = write_toml("bogus_key = 1\n");
    let args = ServeArgs {
        config: Some(f.path().to_path_buf()),
        listen: Some("not-an-addr".into()),
        upstream: Some("ftp://nope".into()),
        stall_timeout: Some("forever".into()),
        max_attempts: Some("0".into()),
        backoff_base: Some("30s".into()),
        backoff_max: Some("1s".into()),
        max_request_body: Some("lots".into()),
        log_format: Some("xml".into()),
        worker_threads: Some("two".into()),
        ..Default::default()
    };
    let e = load_with(&args, no_region).unwrap_err();
    let text = e.to_string();
    for needle in [
        "bogus_key",
        "listen:",
        "upstream:",
        "stall_timeout:",
        "max_attempts:",
        "backoff_base",
        "max_request_body:",
        "log_format:",
        "worker_threads:",
        "region:",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert_eq!(text.lines().count(), e.0.len(), "one problem per line");
    assert!(text.contains("--listen / BEDROCK_RELAY_LISTEN"), "{text}");
}

#[test]
fn bad_regexes_in_file_are_each_reported() {
    let f = write_toml(
        "region = \"us-east-1\"\n[[stall_timeouts]]\nmodel = \"(\"\ntimeout = \"1s\"\n[resume]\nprefill_models = [\"ok\", \"[\"]\ninstructed_models = [\"(x\"]\n",
    );
    let args = ServeArgs {
        config: Some(f.path().to_path_buf()),
        ..Default::default()
    };
    let e = load_with(&args, no_region).unwrap_err();
    assert_eq!(e.0.len(), 3, "{e}");
}

#[test]
fn unreadable_file_still_validates_flags() {
    let args = ServeArgs {
        config: Some("/nonexistent/relay.toml".into()),
        region: Some("us-east-1".into()),
        drain_timeout: Some("x".into()),
        ..Default::default()
    };
    let e = load_with(&args, no_region).unwrap_err();
    assert_eq!(e.0.len(), 2, "{e}");
}

#[test]
fn shipped_example_equals_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/bedrock-relay.toml");
    let args = ServeArgs {
        config: Some(path.into()),
        region: Some("us-east-1".into()),
        ..Default::default()
    };
    let s = load_with(&args, no_region).expect("example file is valid");
    let d = Settings::default();
    assert_eq!(format!("{s:?}"), format!("{d:?}"));
}

#[test]
fn stall_timeout_per_model() {
    let f = write_toml(
        "region = \"r\"\nstall_timeout = \"5s\"\n[[stall_timeouts]]\nmodel = \"opus\"\ntimeout = \"50s\"\n[[stall_timeouts]]\nmodel = \"claude\"\ntimeout = \"20s\"\n",
    );
    let args = ServeArgs {
        config: Some(f.path().to_path_buf()),
        ..Default::default()
    };
    let s = load_with(&args, no_region).expect("valid");
    assert_eq!(
        s.stall_timeout_for("anthropic.claude-opus-4"),
        Duration::from_secs(50)
    );
    assert_eq!(
        s.stall_timeout_for("anthropic.claude-3-haiku"),
        Duration::from_secs(20)
    );
    assert_eq!(s.stall_timeout_for("meta.llama3"), Duration::from_secs(5));
}

#[test]
fn prefill_defaults() {
    let r = ResumeSettings::default();
    assert!(r.prefill_allowed("anthropic.claude-3-5-sonnet-20240620-v1:0"));
    assert!(r.prefill_allowed("us.anthropic.claude-sonnet-4-5-20250929-v1:0"));
    assert!(r.prefill_allowed("amazon.nova-pro-v1:0"));
    assert!(r.prefill_allowed("meta.llama3-70b-instruct-v1:0"));
    assert!(!r.prefill_allowed("anthropic.claude-opus-4-6-v1"));
    assert!(!r.prefill_allowed("anthropic.claude-sonnet-4-7"));
    assert!(!r.prefill_allowed("us.anthropic.claude-haiku-5-0"));
    assert!(!r.prefill_allowed("cohere.command-r-v1:0"));
    assert!(r.instructed_allowed("anthropic.claude-opus-4-6-v1", false));
}

#[test]
fn no_prefill_defaults_match_every_id_shape_of_claude_4_6_and_later() {
    let r = ResumeSettings::default();
    for id in [
        "anthropic.claude-sonnet-4-6",
        "us.anthropic.claude-sonnet-4-6-v1:0",
        "eu.anthropic.claude-opus-4-7-v1:0",
        "apac.anthropic.claude-sonnet-4-8-20260101-v1:0",
        "global.anthropic.claude-opus-5-v1:0",
        "us.anthropic.claude-sonnet-5-v1:0",
        "anthropic.claude-haiku-4-10-v1:0",
        "global.anthropic.claude-fable-1-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-6-v1:0",
        "arn:aws:bedrock:eu-west-1::foundation-model/anthropic.claude-opus-5-v1:0",
    ] {
        let caps = r.caps(id, false);
        assert!(!caps.prefill && caps.instructed && caps.replay, "{id}: {caps:?}");
    }
    for id in [
        "anthropic.claude-sonnet-4-20250514-v1:0",
        "us.anthropic.claude-opus-4-1-20250805-v1:0",
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "us.anthropic.claude-3-5-haiku-20241022-v1:0",
    ] {
        let caps = r.caps(id, false);
        assert!(caps.prefill && !caps.instructed, "{id}: {caps:?}");
    }
}

#[test]
fn instructed_follows_its_mode_and_what_was_learned() {
    let mut r = ResumeSettings::default();
    let old = "anthropic.claude-3-5-sonnet-20240620-v1:0";
    let learned = r.caps(old, true);
    assert!(
        !learned.prefill && learned.instructed,
        "learned at run time"
    );
    r.instructed = Instructed::Off;
    assert!(
        !r.caps("us.anthropic.claude-sonnet-4-6-v1:0", false)
            .instructed
    );
    assert!(!r.caps(old, true).instructed);
    r.instructed = Instructed::Listed;
    assert!(
        !r.caps("us.anthropic.claude-sonnet-4-6-v1:0", false)
            .instructed
    );
    r.instructed_models = vec![regex::Regex::new("nova").unwrap()];
    assert!(r.caps("amazon.nova-pro-v1:0", false).instructed);
    r.instructed = Instructed::NoPrefill;
    assert!(r.caps("amazon.nova-pro-v1:0", false).instructed, "widened");
}

#[test]
fn instructed_mode_from_file_env_or_flag_with_every_error_at_once() {
    let f = write_toml("region = \"r\"\n[resume]\ninstructed = \"off\"\n");
    let args = ServeArgs {
        config: Some(f.path().to_path_buf()),
        ..Default::default()
    };
    let s = load_with(&args, no_region).expect("valid");
    assert_eq!(s.resume.instructed, Instructed::Off);
    let args = ServeArgs {
        config: Some(f.path().to_path_buf()),
        instructed: Some("listed".into()),
        ..Default::default()
    };
    let s = load_with(&args, no_region).expect("valid");
    assert_eq!(s.resume.instructed, Instructed::Listed, "the flag wins");
    let args = ServeArgs {
        region: Some("r".into()),
        instructed: Some("sometimes".into()),
        max_resumes: Some("x".into()),
        ..Default::default()
    };
    let e = load_with(&args, no_region).unwrap_err();
    assert_eq!(e.0.len(), 2, "{e}");
    assert!(
        e.to_string()
            .contains("--instructed / BEDROCK_RELAY_INSTRUCTED"),
        "{e}"
    );
}

#[test]
fn same_listen_and_admin_rejected() {
    let args = ServeArgs {
        region: Some("r".into()),
        listen: Some("127.0.0.1:9000".into()),
        admin_listen: Some("127.0.0.1:9000".into()),
        ..Default::default()
    };
    assert!(load_with(&args, no_region).is_err());
}

#[test]
fn upstream_http2_from_file_then_flag() {
    let f = write_toml("region = \"r\"\nupstream_http2 = \"never\"\n");
    let mut args = ServeArgs {
        config: Some(f.path().to_path_buf()),
        ..Default::default()
    };
    assert_eq!(
        load_with(&args, no_region).expect("valid").upstream_http2,
        UpstreamHttp2::Never
    );
    args.upstream_http2 = Some("Always".into());
    assert_eq!(
        load_with(&args, no_region).expect("valid").upstream_http2,
        UpstreamHttp2::Always
    );
    args.upstream_http2 = Some("h2".into());
    args.max_attempts = Some("0".into());
    let e = load_with(&args, no_region).unwrap_err();
    assert_eq!(e.0.len(), 2, "{e}");
    assert!(e
        .0
        .iter()
        .any(|p| p.starts_with("upstream_http2: must be auto, always or never")));
}

#[test]
fn service_upstreams_from_file_and_flags() {
    let f = write_toml(
        "region = \"r\"\n[service_upstreams]\nsts = \"http://127.0.0.1:9000\"\nsso-oidc = \"https://oidc.internal\"\n",
    );
    let args = ServeArgs {
        config: Some(f.path().to_path_buf()),
        service_upstream: vec!["sts=http://127.0.0.1:9100".into()],
        ..Default::default()
    };
    let s = load_with(&args, no_region).expect("valid");
    assert_eq!(
        s.service_upstreams["sts"].to_string(),
        "http://127.0.0.1:9100/"
    );
    assert_eq!(
        s.service_upstreams["sso-oidc"].to_string(),
        "https://oidc.internal/"
    );
    let args = ServeArgs {
        region: Some("r".into()),
        service_upstream: vec!["sts".into(), "sso=nope".into()],
        max_attempts: Some("0".into()),
        ..Default::default()
    };
    let e = load_with(&args, no_region).unwrap_err();
    assert_eq!(e.0.len(), 3, "{e}");
}

#[test]
fn throttle_and_spillover_from_flags_env_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.toml");
    std::fs::write(
        &path,
        "region = \"us-east-1\"\n[throttle]\nmax_wait = \"5s\"\nmax_waiters = 7\n[spillover]\nregions = [\"eu-west-1\"]\n[region_upstreams]\n\"eu-west-1\" = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let args = ServeArgs {
        config: Some(path),
        ..Default::default()
    };
    let s = load_with(&args, || None).unwrap();
    assert_eq!(s.throttle.max_wait, Duration::from_secs(5));
    assert_eq!(s.throttle.max_waiters, 7);
    assert_eq!(s.spillover.regions, ["eu-west-1"]);
    assert_eq!(
        s.spillover.region_upstreams["eu-west-1"].to_string(),
        "http://127.0.0.1:9/"
    );
    let d = load_with(&ServeArgs::default(), || Some("us-east-1".into())).unwrap();
    assert_eq!(
        d.throttle.max_wait,
        Duration::from_secs(20),
        "on by default"
    );
    let args = ServeArgs {
        throttle_max_wait: Some("0s".into()),
        spillover_region: vec!["us-west-2".into(), "bad region".into()],
        region_upstream: vec!["us-west-2=http://127.0.0.1:1".into()],
        ..Default::default()
    };
    let err = load_with(&args, || Some("us-east-1".into())).unwrap_err();
    assert!(
        err.0.iter().any(|e| e.contains("spillover.regions")),
        "{err}"
    );
}
