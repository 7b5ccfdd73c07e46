//! Tests of the `[inbound]` table: secret sources, redaction, policy names, exposure check.

use super::*;
use crate::config::{load_with, ServeArgs};
use std::io::Write;

fn load_toml(text: &str, args: ServeArgs) -> Result<crate::config::Settings, Vec<String>> {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    let args = ServeArgs {
        config: Some(f.path().to_path_buf()),
        region: Some("us-east-1".into()),
        ..args
    };
    load_with(&args, || None).map_err(|e| e.0)
}

#[test]
fn secrets_from_env_file_and_inline_are_never_in_debug() {
    let mut secret_file = tempfile::NamedTempFile::new().unwrap();
    writeln!(secret_file, "file-token-value").unwrap();
    std::env::set_var("RELAY_TEST_KEY_SECRET", "env-secret-value");
    let text = format!(
        r#"
[inbound]
sigv4_keys = [{{ access_key_id = "AKIDAPP", secret_access_key_env = "RELAY_TEST_KEY_SECRET" }}]
bearer_tokens = ["inline-token-value", {{ file = "{}" }}]
max_concurrency_per_client = 8
header_read_timeout = "2s"
max_header_bytes = "32KiB"
allow_operations = ["ConverseStream"]
deny_models = ["^meta\\."]
"#,
        secret_file.path().display()
    );
    let s = load_toml(&text, ServeArgs::default()).expect("valid");
    let i = &s.inbound;
    assert_eq!(
        i.sigv4_keys[0].secret_access_key.expose(),
        "env-secret-value"
    );
    assert_eq!(i.bearer_tokens[0].expose(), "inline-token-value");
    assert_eq!(i.bearer_tokens[1].expose(), "file-token-value");
    assert_eq!(i.max_concurrency_per_client, 8);
    assert_eq!(i.header_read_timeout, Duration::from_secs(2));
    assert_eq!(i.max_header_bytes, 32 * 1024);
    assert!(i.authenticates());
    let debug = format!("{s:?}");
    for secret in ["env-secret-value", "inline-token-value", "file-token-value"] {
        assert!(!debug.contains(secret), "{secret} leaked into Debug");
    }
}

#[test]
fn every_inbound_problem_is_reported_without_secret_values() {
    let text = r#"
[inbound]
sigv4_keys = [{ access_key_id = "A", secret_access_key_env = "RELAY_TEST_UNSET_VARIABLE" },
              { access_key_id = "B", secret_access_key = "x", secret_access_key_file = "/f" }]
bearer_tokens = [{ file = "/nonexistent/relay-token" }, ""]
allow_operations = ["Conversee"]
max_header_bytes = 100
header_read_timeout = "soon"
"#;
    let e = load_toml(text, ServeArgs::default()).unwrap_err();
    let all = e.join("\n");
    for needle in [
        "RELAY_TEST_UNSET_VARIABLE is not set",
        "sigv4_keys[1]",
        "/nonexistent/relay-token",
        "bearer_tokens[1]: the token is empty",
        "unknown operation \"Conversee\"",
        "max_header_bytes: must be at least 8KiB",
        "header_read_timeout",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn non_loopback_without_auth_needs_the_loud_opt_in() {
    let open = ServeArgs {
        listen: Some("0.0.0.0:0".into()),
        ..Default::default()
    };
    let e = load_toml("", open.clone()).unwrap_err();
    assert!(
        e[0].contains("--allow-unauthenticated-non-loopback"),
        "{e:?}"
    );
    let opted = ServeArgs {
        allow_unauthenticated_non_loopback: true,
        ..open.clone()
    };
    assert!(load_toml("", opted).is_ok());
    let authed = "[inbound]\nbearer_tokens = [\"t\"]\n";
    assert!(
        load_toml(authed, open.clone()).is_ok(),
        "auth makes it safe"
    );
    let in_file = "[inbound]\nallow_unauthenticated_non_loopback = true\n";
    assert!(load_toml(in_file, open).is_ok());
    let loopback = ServeArgs {
        listen: Some("[::1]:0".into()),
        ..Default::default()
    };
    assert!(load_toml("", loopback).is_ok());
}

#[test]
fn unknown_inbound_key_is_rejected() {
    let e = load_toml("[inbound]\nbearer_token = [\"t\"]\n", ServeArgs::default()).unwrap_err();
    assert!(e[0].contains("bearer_token"), "{e:?}");
}

#[test]
fn tls_files_are_checked_at_load() {
    let fx = |n: &str| format!("{}/tests/fixtures/tls/{n}", env!("CARGO_MANIFEST_DIR"));
    let toml =
        |c: &str, k: &str| format!("[inbound]\ntls_cert_file = \"{c}\"\ntls_key_file = \"{k}\"\n");
    let s = load_toml(
        &toml(&fx("cert-a.pem"), &fx("key-a.pem")),
        ServeArgs::default(),
    )
    .expect("valid pair");
    assert!(s.inbound.tls.is_some());
    let e = load_toml(
        &toml(&fx("cert-a.pem"), &fx("key-b.pem")),
        ServeArgs::default(),
    )
    .unwrap_err();
    assert!(e[0].contains("tls_cert_file"), "{e:?}");
    let only = format!("[inbound]\ntls_cert_file = \"{}\"\n", fx("cert-a.pem"));
    let e = load_toml(&only, ServeArgs::default()).unwrap_err();
    assert!(e[0].contains("go together"), "{e:?}");
}
