//! Accept loop, control endpoints and per-request dispatch.
//!
//! Owns the order of one attempt: control endpoints → STS calls (answered by `sts`) → classify
//! → auth → parse → attempt counting → fault choice → plan → log → respond (in `wire`, with
//! the fault cut in at its exact position). Shared state (rules, attempt counters, log,
//! issued credentials, open h2 connections) lives in [`State`]. A connection that opens with
//! the HTTP/2 preface is served by `h2`, which routes each stream through the same control
//! endpoints and [`admit`] (STS calls are answered over HTTP/1.1 only).

mod control;

use super::faults::{self, Fault, FaultRule};
use super::http::{Conn, HttpError, Request};
use super::log::{Log, LogEntry};
use super::plan::{self, Plan};
use super::render::{self, Latency};
use super::request::{self, Family, Prompt};
use super::wire::{respond, send_error, Outcome, Reply};
use super::{gen, sse, SimConfig, SimError};
use bedrock_relay_wire::ops::{classify, Operation};
use bedrock_relay_wire::sigv4::Verdict;
use control::control;
pub(super) use control::control_reply;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Everything connections share.
pub struct State {
    pub config: SimConfig,
    rules: Mutex<Vec<FaultRule>>,
    pub log: Log,
    seq: AtomicU64,
    attempts: Mutex<HashMap<u64, u32>>,
    /// Conversations whose first instructed continuation (protocol turn) was answered.
    instructed: Mutex<std::collections::HashSet<u64>>,
    /// Refuse CountTokens with 403 (the run-time control `deny_count_tokens`).
    deny_count_tokens: AtomicBool,
    /// Temporary credentials issued by the simulator's STS.
    pub sts: super::sts::Issued,
    /// Connection ids and the open h2 connections (for `POST /_sim/h2/reset`).
    pub h2: super::h2::Registry,
    /// On-demand quotas per region × model (`quota`).
    pub quota: std::sync::Arc<super::quota::Quotas>,
}

impl State {
    pub fn new(config: SimConfig) -> Self {
        State {
            rules: Mutex::new(config.rules.clone()),
            log: Log::new(config.log_capacity),
            seq: AtomicU64::new(0),
            attempts: Mutex::new(HashMap::new()),
            instructed: Mutex::new(Default::default()),
            deny_count_tokens: AtomicBool::new(config.deny_count_tokens),
            sts: Default::default(),
            h2: Default::default(),
            quota: std::sync::Arc::new(super::quota::Quotas::new(config.quota)),
            config,
        }
    }

    pub fn add_rules(&self, rules: Vec<FaultRule>) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(rules);
    }

    pub fn clear_rules(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn clear_log(&self) {
        self.log.clear();
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.instructed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn set_deny_count_tokens(&self, deny: bool) {
        self.deny_count_tokens.store(deny, Ordering::Relaxed);
    }

    pub fn deny_count_tokens(&self) -> bool {
        self.deny_count_tokens.load(Ordering::Relaxed)
    }

    /// Did this conversation already get an instructed continuation (protocol turn)?
    fn instructed_before(&self, conversation: u64) -> bool {
        let set = self.instructed.lock().unwrap_or_else(|p| p.into_inner());
        set.contains(&conversation)
    }

    fn mark_instructed(&self, conversation: u64) {
        let mut set = self.instructed.lock().unwrap_or_else(|p| p.into_inner());
        if set.len() > 100_000 {
            set.clear();
        }
        set.insert(conversation);
    }

    fn next_attempt(&self, conversation: u64) -> u32 {
        let mut map = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.clear();
        }
        let n = map.entry(conversation).or_insert(0);
        *n += 1;
        *n
    }

    fn pick_fault(
        &self,
        op: Operation,
        body: &[u8],
        conversation: u64,
        attempt: u32,
    ) -> Option<Fault> {
        let rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        rules
            .iter()
            .find(|r| r.matches(op.name(), body, attempt))
            .map(|r| r.fault.clone())
            .or_else(|| {
                let c = &self.config;
                faults::random_fault(
                    c.fault_rate,
                    c.seed,
                    conversation,
                    attempt,
                    op.is_resumable_stream(),
                )
            })
    }
}

/// Serve until `stopped` flips; then abort open connections.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { conns.spawn(accepted_connection(stream, state.clone())); }
                Err(e) => {
                    tracing::warn!(error = %e, "simulator accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// HTTP/2 (prior knowledge) when the client opens with the preface, else HTTP/1.1.
async fn accepted_connection(stream: tokio::net::TcpStream, state: Arc<State>) {
    let id = state.h2.next_id();
    if super::h2::starts_with_preface(&stream).await {
        return super::h2::serve(stream, state, id).await;
    }
    let mut conn = Conn::new(stream);
    conn.id = id;
    connection(conn, state).await
}

async fn connection(mut conn: Conn, state: Arc<State>) {
    loop {
        let req = match conn.read_request().await {
            Ok(Some(r)) => r,
            Ok(None) | Err(HttpError::Io(_)) => return,
            Err(e) => {
                let err = SimError::Validation(e.to_string());
                let _ = send_error(&mut conn, &err, "malformed").await;
                return;
            }
        };
        let close = req.close;
        match handle(&state, conn, req).await {
            Some(c) if !close => conn = c,
            _ => return,
        }
    }
}

fn request_id(seq: u64) -> String {
    let h = gen::hash_parts([seq.to_string().as_str(), "request-id"]);
    let l = gen::hash_parts([h.to_string().as_str()]);
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        h >> 32,
        h & 0xffff,
        (h >> 16) & 0xfff,
        l & 0xfff,
        l >> 16
    )
}

async fn handle(state: &State, mut conn: Conn, req: Request) -> Option<Conn> {
    if req.path.starts_with("/_sim/") {
        return control(state, &mut conn, &req).await.ok().map(|_| conn);
    }
    let (seq, rid) = state.next_request();
    if super::sts::is_sts(&req) {
        return super::sts::serve(&state.sts, &state.log, conn, req, seq, &rid).await;
    }
    let outcome = admit(state, &req, seq, conn.id);
    respond(&state.config, conn, outcome, &rid).await
}

impl State {
    /// The next request's sequence number and request id.
    pub(super) fn next_request(&self) -> (u64, String) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        (seq, request_id(seq))
    }
}

/// Everything about a model request before its bytes are written, on either protocol:
/// classify, verify, parse, count the attempt, choose the fault, plan, and log it
/// (`connection`: the id of the connection it came on).
pub(super) fn admit(state: &State, req: &Request, seq: u64, connection: u64) -> Outcome {
    let method = http::Method::from_bytes(req.method.as_bytes()).unwrap_or(http::Method::GET);
    let classified = classify(&method, &req.path);
    let op = classified.operation;
    let body_json: Result<Value, _> = serde_json::from_slice(&req.body);
    // The OpenAI- and Anthropic-compatible APIs name the model in the body.
    let model_id = match &classified.model_id {
        Some(m) => m.clone(),
        None if op.is_sse() => body_json
            .as_ref()
            .ok()
            .and_then(|v| v["model"].as_str())
            .unwrap_or("")
            .to_owned(),
        None => String::new(),
    };
    let verdict = super::sts::verify(&state.config, &state.sts, req);
    let prompt = match &body_json {
        Ok(v) => prompt_of(op, &model_id, v),
        Err(_) => Err(SimError::Validation(
            "Malformed input request, please reformat your input and try again.".into(),
        )),
    };
    let (system, first) = prompt
        .as_ref()
        .map(|p| (p.system.as_str(), p.first_user_text()))
        .unwrap_or(("", ""));
    let conversation = gen::hash_parts([model_id.as_str(), system, first]);
    // A count is no attempt of the conversation (attempt 0): counting before a continuation
    // leaves the attempt numbers fault rules and sampling go by as they were.
    let attempt = match op {
        Operation::CountTokens => 0,
        _ => state.next_attempt(conversation),
    };
    let body_text = String::from_utf8_lossy(&req.body);
    let tag = gen::directive(&body_text, "tag").map(str::to_owned);

    let auth_error = match verdict {
        Verdict::Valid | Verdict::Bearer | Verdict::Unchecked => None,
        Verdict::UnknownKey => Some(SimError::UnrecognizedClient),
        Verdict::Invalid => Some(SimError::InvalidSignature),
        Verdict::Missing => Some(SimError::MissingAuthentication),
        Verdict::BadBearer => Some(SimError::AccessDenied),
    };
    let mut planned: Option<Plan> = None;
    let outcome = if let Some(e) = auth_error {
        Outcome {
            result: Err(e),
            fault: None,
        }
    } else if op == Operation::Unknown || op.route() != bedrock_relay_wire::ops::Route::Runtime {
        let msg = format!("UnknownOperationException: {} {}", req.method, req.path);
        Outcome {
            result: Err(SimError::UnknownOperation(msg)),
            fault: None,
        }
    } else {
        let fault = state.pick_fault(op, &req.body, conversation, attempt);
        let first_instructed = !state.instructed_before(conversation);
        let result = prompt.and_then(|p| {
            reply(
                state,
                op,
                &model_id,
                &p,
                (attempt, first_instructed),
                seq,
                &body_json,
                &mut planned,
            )
        });
        // A reply that never left (an injected status or a reset before headers) does not
        // use up the conversation's forced phrasing.
        let sent = !matches!(
            fault,
            Some(Fault::Status { .. } | Fault::ResetBeforeHeaders)
        );
        if sent && planned.as_ref().is_some_and(|p| p.phrasing.is_some()) {
            state.mark_instructed(conversation);
        }
        let result = charge_quota(state, req, op, &model_id, result, &planned, &fault);
        Outcome { result, fault }
    };
    let status = match (&outcome.fault, &outcome.result) {
        (Some(Fault::Status { code }), _) => *code,
        (Some(Fault::ResetBeforeHeaders), _) => 0,
        (_, Err(e)) => e.status_and_type().0,
        _ => 200,
    };
    state.log.push(LogEntry {
        seq,
        operation: op.name().to_owned(),
        model_id: (!model_id.is_empty()).then(|| model_id.clone()),
        conversation: format!("{conversation:016x}"),
        attempt,
        connection,
        signature: verdict.as_str().to_owned(),
        service: req.signed_service(),
        prefill: planned.as_ref().and_then(|p| p.prefill.clone()),
        continuation: planned.as_ref().is_some_and(|p| p.continuation),
        phrasing: planned.as_ref().and_then(|p| p.phrasing.map(str::to_owned)),
        intended: planned.as_ref().and_then(|p| p.intended.clone()),
        output_tokens: planned.as_ref().map(|p| p.output_tokens),
        fault: outcome.fault.as_ref().map(|f| f.kind().to_owned()),
        tag,
        status,
        body: body_json.unwrap_or_else(|_| Value::String(body_text.into_owned())),
        events_verified: None,
    });
    tracing::debug!(
        seq,
        operation = op.name(),
        attempt,
        status,
        "simulator request"
    );
    outcome
}

/// A model invocation that will be answered is charged against its region × model quota
/// when it starts (refused with 429 when it does not fit) and refunded the unused part of
/// its reservation when its answer ends (after the answer's simulated duration).
fn charge_quota(
    state: &State,
    req: &Request,
    op: Operation,
    model_id: &str,
    result: Result<Reply, SimError>,
    planned: &Option<Plan>,
    fault: &Option<Fault>,
) -> Result<Reply, SimError> {
    let invocation = matches!(
        op,
        Operation::Converse
            | Operation::ConverseStream
            | Operation::InvokeModel
            | Operation::InvokeModelWithResponseStream
    ) || op.is_sse();
    let sent = !matches!(
        fault,
        Some(Fault::Status { .. } | Fault::ResetBeforeHeaders)
    );
    let (Ok(reply), Some(plan)) = (&result, planned) else {
        return result;
    };
    if !invocation || !sent {
        return result;
    }
    let _ = reply;
    let quota = &state.quota;
    let c = quota.config();
    if c.rpm == 0 && c.tpm == 0 {
        return result;
    }
    let max_tokens = serde_json::from_slice::<Value>(&req.body)
        .map(|v| bedrock_relay_wire::cost::max_tokens(&v))
        .unwrap_or(bedrock_relay_wire::cost::DEFAULT_MAX_TOKENS);
    let region = super::quota::region_of(req.header("authorization"));
    match quota.charge(&region, model_id, u64::from(plan.input_tokens), max_tokens) {
        Err(message) => Err(SimError::Injected {
            status: 429,
            message: message.to_owned(),
        }),
        Ok(charge) => {
            let output = u64::from(plan.output_tokens);
            let took = state.config.ttft + state.config.inter_token * plan.output_tokens;
            let quota = state.quota.clone();
            tokio::spawn(async move {
                tokio::time::sleep(took).await;
                quota.refund(&charge, output);
            });
            result
        }
    }
}

fn prompt_of(op: Operation, model_id: &str, body: &Value) -> Result<Prompt, SimError> {
    let family = || {
        Family::of(model_id)
            .ok_or_else(|| SimError::Validation("The provided model identifier is invalid.".into()))
    };
    match op {
        Operation::Converse | Operation::ConverseStream => request::parse_converse(body),
        op if op.is_sse() => sse::parse(op, body).map(|(_, prompt, _)| prompt),
        Operation::InvokeModel | Operation::InvokeModelWithResponseStream => {
            request::parse_invoke(family()?, body)
        }
        Operation::CountTokens => {
            if let Some(c) = body.pointer("/input/converse") {
                request::parse_converse(c)
            } else if let Some(b) = body
                .pointer("/input/invokeModel/body")
                .and_then(Value::as_str)
            {
                let inner: Value = serde_json::from_str(b).map_err(|_| {
                    SimError::Validation("input.invokeModel.body is not JSON".into())
                })?;
                request::parse_invoke(family()?, &inner)
            } else {
                Err(SimError::Validation(
                    "Malformed input request: input must have converse or invokeModel".into(),
                ))
            }
        }
        _ => Ok(Prompt::default()),
    }
}

/// Bedrock's message for a CountTokens on a model that cannot count.
pub const NO_COUNTING: &str = "The provided model doesn't support counting tokens.";

/// CountTokens takes only the bare id of a foundation model that supports counting (Claude):
/// not an inference profile (`us.`, `eu.`, `apac.`, `global.`, `jp.`, `au.`, `ca.`,
/// `us-gov.`), not an ARN, not Nova or another family.
pub(super) fn counting_model(model_id: &str) -> Result<(), SimError> {
    const PROFILES: [&str; 10] = [
        "us.", "eu.", "apac.", "global.", "jp.", "au.", "ca.", "us-gov.", "ap.", "sa.",
    ];
    let bare = !model_id.starts_with("arn:") && !PROFILES.iter().any(|p| model_id.starts_with(p));
    if bare && model_id.starts_with("anthropic.claude") {
        Ok(())
    } else {
        Err(SimError::Validation(NO_COUNTING.into()))
    }
}

#[allow(clippy::too_many_arguments)]
fn reply(
    state: &State,
    op: Operation,
    model_id: &str,
    prompt: &Prompt,
    (attempt, first_instructed): (u32, bool),
    seq: u64,
    body: &Result<Value, serde_json::Error>,
    planned: &mut Option<Plan>,
) -> Result<Reply, SimError> {
    let c = &state.config;
    let json = |body: Value| {
        Ok(Reply::Json {
            body,
            headers: Vec::new(),
        })
    };
    match op {
        Operation::CountTokens => {
            if state.deny_count_tokens() {
                return Err(SimError::NotAuthorized(format!(
                    "User: arn:aws:iam::123456789012:user/sim is not authorized to perform: bedrock:CountTokens on resource: arn:aws:bedrock:us-east-1::foundation-model/{model_id} with an explicit deny in an identity-based policy"
                )));
            }
            counting_model(model_id)?;
            let n = plan::count(model_id, prompt, &c.no_prefill_models);
            return json(json!({ "inputTokens": n }));
        }
        Operation::ApplyGuardrail => {
            let _ = body;
            return json(json!({
                "usage": {"topicPolicyUnits": 1, "contentPolicyUnits": 1, "wordPolicyUnits": 1,
                          "sensitiveInformationPolicyUnits": 1, "sensitiveInformationPolicyFreeUnits": 0,
                          "contextualGroundingPolicyUnits": 0},
                "action": "NONE", "outputs": [], "assessments": []
            }));
        }
        _ => {}
    }
    let p = plan::plan(
        model_id,
        prompt,
        attempt,
        seq,
        &c.no_prefill_models,
        first_instructed,
    )?;
    let deltas = p.text.len() as u64 + p.reasoning.as_ref().map_or(0, |r| r.0.len() as u64);
    let lat = Latency {
        first_byte_ms: c.ttft.as_millis() as u64,
        total_ms: (c.ttft + c.inter_token * deltas as u32).as_millis() as u64 + 1,
    };
    let msg_id = format!(
        "msg_bdrk_{:024x}",
        u128::from(gen::hash_parts([seq.to_string().as_str()]))
    );
    let out = match op {
        op if op.is_sse() => {
            let ask = body
                .as_ref()
                .ok()
                .and_then(|v| sse::parse(op, v).ok())
                .map(|(_, _, ask)| ask)
                .unwrap_or_default();
            match sse::render(op, model_id, &msg_id, &p, ask) {
                Ok(stream) => Reply::Sse { stream, op },
                Err(body) => Reply::Json {
                    body,
                    headers: Vec::new(),
                },
            }
        }
        Operation::ConverseStream => Reply::Stream {
            stream: render::converse_stream(&p, lat),
            invoke: false,
        },
        Operation::Converse => Reply::Json {
            body: render::converse_body(&p, lat),
            headers: Vec::new(),
        },
        Operation::InvokeModelWithResponseStream => {
            let family = Family::of(model_id).ok_or_else(|| {
                SimError::Validation("The provided model identifier is invalid.".into())
            })?;
            Reply::Stream {
                stream: render::invoke_stream(family, model_id, &msg_id, &p, lat),
                invoke: true,
            }
        }
        _ => {
            let family = Family::of(model_id).ok_or_else(|| {
                SimError::Validation("The provided model identifier is invalid.".into())
            })?;
            Reply::Json {
                body: render::invoke_body(family, model_id, &msg_id, &p),
                headers: vec![
                    (
                        "x-amzn-bedrock-input-token-count",
                        p.input_tokens.to_string(),
                    ),
                    (
                        "x-amzn-bedrock-output-token-count",
                        p.output_tokens.to_string(),
                    ),
                    (
                        "x-amzn-bedrock-invocation-latency",
                        lat.total_ms.to_string(),
                    ),
                ],
            }
        }
    };
    *planned = Some(p);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bare_claude_ids_can_be_counted() {
        assert!(counting_model("anthropic.claude-sonnet-4-6-v1:0").is_ok());
        assert!(counting_model("anthropic.claude-3-5-sonnet-20240620-v1:0").is_ok());
        for id in [
            "us.anthropic.claude-sonnet-4-6-v1:0",
            "global.anthropic.claude-sonnet-4-6-v1:0",
            "us-gov.anthropic.claude-sonnet-4-6-v1:0",
            "jp.anthropic.claude-sonnet-4-6-v1:0",
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-6-v1:0",
            "amazon.nova-pro-v1:0",
            "meta.llama3-8b-instruct-v1:0",
        ] {
            let err = counting_model(id).unwrap_err();
            assert_eq!(err.status_and_type(), (400, "ValidationException"), "{id}");
            assert_eq!(err.to_string(), NO_COUNTING);
        }
        let denied = SimError::NotAuthorized("User: x is not authorized".into());
        assert_eq!(denied.status_and_type(), (403, "AccessDeniedException"));
    }
}
