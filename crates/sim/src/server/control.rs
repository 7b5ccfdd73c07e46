//! The simulator's control endpoints under `/_sim/` (fault rules, the attempt log, health,
//! the h2 connection reset, run-time controls such as `deny_count_tokens`), answered the same over HTTP/1.1 and h2.

use super::super::faults::FaultRule;
use super::super::http::{Conn, Request};
use super::super::wire::send_json;
use super::State;
use serde_json::{json, Value};

/// Control endpoints under `/_sim/`.
pub(super) async fn control(state: &State, conn: &mut Conn, req: &Request) -> std::io::Result<()> {
    let (status, body) = control_reply(state, req);
    send_json(conn, status, &body, Vec::new(), "control").await
}

/// The status and JSON body of a control endpoint.
pub(crate) fn control_reply(state: &State, req: &Request) -> (u16, Value) {
    let ok = |v: Value| (200u16, v);
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/_sim/log") => {
            ok(serde_json::to_value(state.log.entries()).unwrap_or(Value::Null))
        }
        ("DELETE", "/_sim/log") => {
            state.clear_log();
            ok(json!({"cleared": true}))
        }
        ("GET", "/_sim/faults") => {
            let rules = state
                .rules
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            ok(serde_json::to_value(rules).unwrap_or(Value::Null))
        }
        ("POST", "/_sim/faults") => {
            let text = String::from_utf8_lossy(&req.body);
            let text = if text.trim_start().starts_with('{') {
                format!("[{text}]")
            } else {
                text.into_owned()
            };
            match FaultRule::parse_json_list(&text) {
                Ok(rules) => {
                    let n = rules.len();
                    state.add_rules(rules);
                    ok(json!({"added": n}))
                }
                Err(e) => (400, json!({"message": e.to_string()})),
            }
        }
        ("DELETE", "/_sim/faults") => {
            state.clear_rules();
            ok(json!({"cleared": true}))
        }
        ("GET", "/_sim/controls") => ok(json!({"deny_count_tokens": state.deny_count_tokens()})),
        ("POST", "/_sim/controls") => {
            let parsed: Result<Value, _> = serde_json::from_slice(&req.body);
            let Ok(Value::Object(map)) = parsed else {
                return (400, json!({"message": "controls: expected a JSON object"}));
            };
            for (key, value) in &map {
                match (key.as_str(), value.as_bool()) {
                    ("deny_count_tokens", Some(_)) => {}
                    _ => {
                        let msg = format!("controls: unknown control or value {key}: {value}");
                        return (400, json!({ "message": msg }));
                    }
                }
            }
            if let Some(deny) = map.get("deny_count_tokens").and_then(Value::as_bool) {
                state.set_deny_count_tokens(deny);
            }
            ok(json!({"deny_count_tokens": state.deny_count_tokens()}))
        }
        ("GET", "/_sim/quota") => ok(state.quota.report()),
        ("POST", "/_sim/quota") => {
            match serde_json::from_slice::<crate::quota::QuotaConfig>(&req.body) {
                Ok(c) => {
                    state.quota.set(c);
                    ok(state.quota.report())
                }
                Err(e) => (400, json!({"message": format!("quota: {e}")})),
            }
        }
        ("DELETE", "/_sim/quota") => {
            state.quota.set(state.quota.config());
            ok(state.quota.report())
        }
        ("GET", "/_sim/health") => ok(json!({"status": "ok"})),
        ("POST", "/_sim/h2/reset") => ok(json!({"reset": state.h2.reset_all()})),
        _ => (
            404,
            json!({"message": format!("no simulator control endpoint {} {}", req.method, req.path)}),
        ),
    }
}
