//! The queue under paused time: fairness across clients, the wait bound, absorption.

use super::*;
use std::sync::Arc;

fn admissions(max_wait: Duration) -> Arc<Admissions> {
    let registry = prometheus::Registry::new();
    let metrics = AdmissionMetrics::new(&registry, vec!["us-east-1".into()]);
    let settings = ThrottleSettings {
        max_wait,
        max_waiters: 100,
    };
    Arc::new(Admissions::new(settings, Spillover::default(), metrics))
}

fn key() -> QuotaKey {
    QuotaKey {
        region: "us-east-1".into(),
        model: "us.anthropic.claude-sonnet-4-6-v1:0".into(),
    }
}

/// Teach the quota a rate of `rate` tokens/s (one admitted request, then a throttle).
fn teach(adm: &Admissions, rate: u64) {
    // Measured over at least 250 ms, times 0.85.
    let p = adm
        .try_acquire(&key(), rate * 25 / 85)
        .expect("unknown quota admits");
    p.throttled(TOO_MANY_TOKENS);
}

#[tokio::test(start_paused = true)]
async fn one_greedy_client_cannot_starve_the_others() {
    let adm = admissions(Duration::from_secs(60));
    teach(&adm, 100);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let t0 = Instant::now();
    // The greedy client queues 20 requests of 100 tokens (20 s of quota), then two others
    // arrive with one request each.
    let mut clients: Vec<String> = (0..20).map(|i| format!("greedy:{i}")).collect();
    clients.push("a:0".into());
    clients.push("b:0".into());
    for name in clients {
        let (adm, order) = (adm.clone(), order.clone());
        let client = name.split(':').next().unwrap().to_owned();
        tasks.push(tokio::spawn(async move {
            let p = adm
                .acquire(
                    &key(),
                    &client,
                    100,
                    Instant::now() + Duration::from_secs(60),
                )
                .await;
            assert!(p.is_ok(), "{name}");
            order.lock().unwrap().push((name, t0.elapsed()));
        }));
        tokio::task::yield_now().await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap();
    let pos = |n: &str| order.iter().position(|(m, _)| m == n).unwrap();
    assert!(pos("a:0") <= 2 && pos("b:0") <= 3, "{order:?}");
    // The quota's pace is kept: 22 requests of 100 tokens at 100 tokens/s, the rate
    // growing by 10% a second while they wait (probing for more): ~8.7 s.
    let last = order.last().unwrap().1;
    assert!(
        last >= Duration::from_secs(7) && last <= Duration::from_secs(23),
        "{last:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_never_waits_past_max_wait() {
    let max_wait = Duration::from_secs(2);
    let adm = admissions(max_wait);
    teach(&adm, 10);
    // The first 1000 tokens go when the bucket is full (1 s); the next would wait 100 s.
    assert!(adm
        .acquire(&key(), "c", 1000, Instant::now() + max_wait)
        .await
        .is_ok());
    let t0 = Instant::now();
    let r = adm
        .acquire(&key(), "c", 1000, Instant::now() + max_wait)
        .await;
    assert!(matches!(r, Err(Refused::Timeout)));
    assert_eq!(t0.elapsed(), max_wait);
    assert_eq!(adm.waiting(&key()), 0, "the waiter left the queue");

    // Through a Gate, over several attempts (a throttle absorbed in between), the request's
    // waits add up to max_wait at most, then it gets Bedrock's 429 naming the wait.
    let mut gate = Gate::new("c".into());
    let mut req = http::Request::new(Bytes::from_static(
        br#"{"messages":[],"inferenceConfig":{"maxTokens":100}}"#,
    ));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = "http://h/model/us.anthropic.claude-sonnet-4-6-v1:0/converse"
        .parse()
        .unwrap();
    let t0 = Instant::now();
    let mut refused = None;
    for _ in 0..10 {
        match gate
            .admit(&adm, &mut req.clone(), Duration::from_secs(900))
            .await
        {
            Ok(_) => {
                assert!(gate.absorb(&adm, Duration::from_secs(900)) || t0.elapsed() >= max_wait)
            }
            Err(resp) => {
                refused = Some(resp);
                break;
            }
        }
        gate.throttled(&adm, TOO_MANY_TOKENS);
    }
    let resp = refused.expect("refused in the end");
    assert!(t0.elapsed() <= max_wait, "{:?}", t0.elapsed());
    assert_eq!(resp.status(), 429);
    let body = String::from_utf8_lossy(resp.body()).into_owned();
    assert!(
        body.contains(TOO_MANY_TOKENS) && body.contains("waited 2s"),
        "{body}"
    );
}

#[tokio::test(start_paused = true)]
async fn off_with_zero_max_wait() {
    let adm = admissions(Duration::ZERO);
    teach(&adm, 1);
    for _ in 0..10 {
        assert!(adm.try_acquire(&key(), 1_000_000).is_some());
    }
    let mut gate = Gate::new("c".into());
    assert!(!gate.absorb(&adm, Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn a_spillover_region_starts_from_the_rate_its_model_taught_elsewhere() {
    let adm = admissions(Duration::from_secs(60));
    teach(&adm, 100);
    let west = QuotaKey {
        region: "us-west-2".into(),
        ..key()
    };
    let other_model = QuotaKey {
        region: "us-west-2".into(),
        model: "anthropic.claude-3-5-sonnet-20240620-v1:0".into(),
    };
    // An unknown quota admits anything; a sibling of a taught one admits its bucket only.
    assert!(adm.try_acquire(&other_model, 10_000).is_some());
    assert!(adm.try_acquire(&other_model, 10_000).is_some());
    let learned = adm.quota(&key()).lock().tokens.rate().expect("taught");
    let seeded = adm.quota(&west).lock().tokens.rate();
    assert_eq!(seeded, Some(learned));
    assert!(adm.try_acquire(&west, 10_000).is_some(), "a full bucket");
    assert!(adm.try_acquire(&west, 10_000).is_none(), "then empty");
}
