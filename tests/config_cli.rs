//! Process-level config test: `BEDROCK_RELAY_*` environment variables sit between the
//! config file and CLI flags. One test function on purpose: it mutates this test
//! process's environment, which must not race with other tests.

use bedrock_relay::ServeArgs;
use clap::Parser;
use std::io::Write;
use std::time::Duration;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

#[test]
fn file_then_env_then_cli() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(
        b"region = \"us-west-2\"\nmax_attempts = 2\nstall_timeout = \"1s\"\ndrain_timeout = \"3s\"\n",
    )
    .unwrap();
    std::env::set_var("BEDROCK_RELAY_CONFIG", file.path());
    std::env::set_var("BEDROCK_RELAY_MAX_ATTEMPTS", "5");
    std::env::set_var("BEDROCK_RELAY_STALL_TIMEOUT", "7s");
    std::env::set_var("BEDROCK_RELAY_FIPS", "true");

    let cli = Cli::try_parse_from(["bedrock-relay", "--max-attempts", "9"]).unwrap();
    let s = bedrock_relay::load_config(&cli.serve).expect("valid");
    assert_eq!(s.max_attempts, 9, "CLI beats env");
    assert_eq!(s.stall_timeout, Duration::from_secs(7), "env beats file");
    assert_eq!(
        s.drain_timeout,
        Duration::from_secs(3),
        "file beats default"
    );
    assert_eq!(s.region, "us-west-2");
    assert!(s.fips, "boolean flag from env");

    std::env::set_var("BEDROCK_RELAY_BACKOFF_BASE", "quickly");
    let cli = Cli::try_parse_from(["bedrock-relay", "--listen", "nowhere"]).unwrap();
    let err = bedrock_relay::load_config(&cli.serve)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("backoff_base") && err.contains("BEDROCK_RELAY_BACKOFF_BASE"),
        "{err}"
    );
    assert!(err.contains("listen:"), "{err}");
    assert_eq!(err.lines().count(), 2, "{err}");
}
