//! The retry driver without sockets, in tokio's paused time: a scripted upstream
//! (`crate::proxy::testing`) answers each attempt.

use super::*;
use crate::proxy::testing::{self, Reply, Step};
use crate::retry::RetryReason;

const PATH: &str = "/model/anthropic.claude-3-haiku-20240307-v1:0/converse";

fn ok() -> Reply {
    Reply::Http(200, "application/json", vec![Step::Data(Bytes::from("{}"))])
}

fn status(code: u16) -> Reply {
    Reply::Http(
        code,
        "application/json",
        vec![Step::Data(Bytes::from("{\"message\":\"x\"}"))],
    )
}

/// Drive a whole-body request; what it gave and the attempts it made.
async fn drive(relay: &Arc<Relay>) -> (Result<Response<Bytes>, Failure>, u32) {
    let outbound = testing::outbound(relay, PATH, "{}");
    let (mut attempts, policy) = testing::attempts(relay, Operation::Converse);
    let result = attempts
        .drive(&mut Whole::new(&outbound, 1 << 20), policy)
        .await;
    (result, attempts.made())
}

#[tokio::test(start_paused = true)]
async fn a_retryable_status_is_retried_until_an_answer() {
    let (relay, script) = testing::relay(|_| {});
    for r in [status(503), status(500), ok()] {
        script.push(r);
    }
    let (result, made) = drive(&relay).await;
    assert_eq!(result.unwrap().status(), 200);
    assert_eq!(made, 3);
    let retries = &relay.metrics.retries_total;
    let retried = |r: RetryReason| retries.with_label_values(&[r.label()]).get();
    assert_eq!(
        retried(RetryReason::Unavailable) + retried(RetryReason::ServerError),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn no_more_than_max_attempts_and_the_last_answer_is_bedrocks() {
    let (relay, script) = testing::relay(|s| s.max_attempts = 2);
    for _ in 0..3 {
        script.push(status(503));
    }
    let (result, made) = drive(&relay).await;
    match result {
        Err(Failure::Status { response, .. }) => assert_eq!(response.status(), 503),
        other => panic!("{other:?}"),
    }
    assert_eq!((made, script.requests()), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn a_client_error_is_final_at_once() {
    let (relay, script) = testing::relay(|_| {});
    script.push(status(400));
    script.push(ok());
    let (result, made) = drive(&relay).await;
    assert!(matches!(result, Err(Failure::Status { retry: None, .. })));
    assert_eq!(made, 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_and_named_when_none_is_left() {
    let (relay, script) = testing::relay(|s| s.max_attempts = 3);
    script.push(Reply::Refused);
    script.push(ok());
    assert_eq!(drive(&relay).await.0.unwrap().status(), 200);
    // Nothing scripted: every attempt refused.
    let (result, made) = drive(&relay).await;
    assert_eq!(made, 3);
    let Err(Failure::Transport(t)) = result else {
        panic!("a transport failure")
    };
    assert_eq!(t.reason(), RetryReason::Connect);
    let error = Failure::Transport(t).into_result(made).unwrap_err();
    assert!(matches!(error, RelayError::Connect { attempts: 3, .. }));
    // The cause is kept: the upstream error is the source of the transport failure.
    let source = std::error::Error::source(&error).and_then(std::error::Error::source);
    assert!(
        source.is_some_and(|e| e.to_string().contains("scripted")),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_torn_body_is_retried() {
    let (relay, script) = testing::relay(|_| {});
    let torn = vec![Step::Data(Bytes::from("{\"par")), Step::Reset];
    script.push(Reply::Http(200, "application/json", torn));
    script.push(ok());
    let (result, made) = drive(&relay).await;
    assert_eq!(result.unwrap().into_body(), Bytes::from("{}"));
    assert_eq!(made, 2);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_stops_retries() {
    let (relay, script) = testing::relay(|s| s.request_deadline = Duration::ZERO);
    script.push(status(503));
    script.push(ok());
    let (result, made) = drive(&relay).await;
    assert!(matches!(result, Err(Failure::Status { .. })));
    assert_eq!(made, 1);
}

#[tokio::test(start_paused = true)]
async fn an_empty_retry_budget_stops_retries_and_is_counted() {
    let (relay, script) = testing::relay(|s| s.retry_budget = 4);
    script.push(status(503));
    script.push(ok());
    let (result, made) = drive(&relay).await;
    assert!(matches!(result, Err(Failure::Status { .. })));
    assert_eq!(made, 1);
    assert_eq!(relay.metrics.retry_budget_exhausted_total.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn backoff_waits_between_attempts_within_its_cap() {
    let (relay, script) = testing::relay(|s| {
        s.backoff_base = Duration::from_secs(1);
        s.backoff_max = Duration::from_secs(4);
    });
    for r in [status(503), status(503), status(503), ok()] {
        script.push(r);
    }
    let start = tokio::time::Instant::now();
    let (result, made) = drive(&relay).await;
    assert_eq!((result.unwrap().status().as_u16(), made), (200, 4));
    // Full jitter: each wait is at most min(base × 2^n, max).
    assert!(
        start.elapsed() <= Duration::from_secs(1 + 2 + 4),
        "{:?}",
        start.elapsed()
    );
}
