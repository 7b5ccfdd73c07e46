//! Which AWS operation a request is, from its method, path and credential scope.
//!
//! Shared by the relay (routing, retry and resume decisions, metric labels) and the
//! simulator (dispatch). Model ids come percent-encoded in the path (ARNs contain `:` and
//! `/`); [`Classified::model_id`] is the decoded form, the raw path is never rewritten.
//! Requests for other AWS services (the SDK's own credential calls, the protocol of another
//! service's errors) are recognised in `services`.

use percent_encoding::percent_decode_str;

mod services;
pub use services::{
    credential_service, endpoint_prefix, form_value, sts_action, CredentialService, Protocol,
    STS_CREDENTIAL_ACTIONS,
};

/// A Bedrock Runtime or Bedrock Agent Runtime operation the relay knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Converse,
    ConverseStream,
    InvokeModel,
    InvokeModelWithResponseStream,
    InvokeModelWithBidirectionalStream,
    CountTokens,
    ApplyGuardrail,
    StartAsyncInvoke,
    GetAsyncInvoke,
    ListAsyncInvokes,
    /// Any Bedrock Agent Runtime operation (InvokeAgent, Retrieve, RetrieveAndGenerate, ...).
    AgentRuntime,
    /// OpenAI-compatible Chat Completions (`POST /openai/v1/chat/completions`, `/v1/...`).
    ChatCompletions,
    /// OpenAI-compatible Responses (`POST /openai/v1/responses`, `/v1/responses`).
    Responses,
    /// Anthropic-Messages-compatible (`POST /anthropic/v1/messages`, `/v1/messages`).
    AnthropicMessages,
    /// Not a data-plane operation the relay serves.
    Unknown,
}

/// Which upstream host serves an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Runtime,
    AgentRuntime,
    /// bedrock-mantle (`bedrock-mantle.{region}.api.aws`, signing name `bedrock-mantle`),
    /// reached through the relay under the path prefix [`MANTLE_PREFIX`].
    Mantle,
}

/// Client paths under this prefix go to bedrock-mantle, without it: an OpenAI SDK with
/// `base_url=http://relay/mantle/v1` reaches `https://bedrock-mantle.{region}.api.aws/v1`.
pub const MANTLE_PREFIX: &str = "/mantle";

impl Route {
    /// The route of a client path, and the path to send upstream.
    pub fn of_path(path_and_query: &str) -> (Option<Route>, &str) {
        match path_and_query.strip_prefix(MANTLE_PREFIX) {
            Some(rest) if rest.starts_with('/') => (Some(Route::Mantle), rest),
            _ => (None, path_and_query),
        }
    }

    /// The SigV4 signing name of the route's service.
    pub fn signing_name(self) -> &'static str {
        match self {
            Route::Mantle => "bedrock-mantle",
            Route::Runtime | Route::AgentRuntime => "bedrock",
        }
    }
}

impl Operation {
    /// Stable name for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Converse => "Converse",
            Operation::ConverseStream => "ConverseStream",
            Operation::InvokeModel => "InvokeModel",
            Operation::InvokeModelWithResponseStream => "InvokeModelWithResponseStream",
            Operation::InvokeModelWithBidirectionalStream => "InvokeModelWithBidirectionalStream",
            Operation::CountTokens => "CountTokens",
            Operation::ApplyGuardrail => "ApplyGuardrail",
            Operation::StartAsyncInvoke => "StartAsyncInvoke",
            Operation::GetAsyncInvoke => "GetAsyncInvoke",
            Operation::ListAsyncInvokes => "ListAsyncInvokes",
            Operation::AgentRuntime => "AgentRuntime",
            Operation::ChatCompletions => "ChatCompletions",
            Operation::Responses => "Responses",
            Operation::AnthropicMessages => "AnthropicMessages",
            Operation::Unknown => "Unknown",
        }
    }

    /// Response is an EventStream of model output that the relay can resume.
    pub fn is_resumable_stream(self) -> bool {
        matches!(
            self,
            Operation::ConverseStream | Operation::InvokeModelWithResponseStream
        )
    }

    /// Answered with Server-Sent Events when the request asks to stream (`"stream": true`).
    pub fn is_sse(self) -> bool {
        matches!(
            self,
            Operation::ChatCompletions | Operation::Responses | Operation::AnthropicMessages
        )
    }

    pub fn route(self) -> Route {
        match self {
            Operation::AgentRuntime => Route::AgentRuntime,
            _ => Route::Runtime,
        }
    }
}

/// A classified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub operation: Operation,
    /// Decoded model id (`anthropic.claude-...` or a full ARN), when the path has one.
    pub model_id: Option<String>,
}

/// Classify a request by method and path (path without query, as sent: still encoded).
pub fn classify(method: &http::Method, path: &str) -> Classified {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let post = method == http::Method::POST;
    let get = method == http::Method::GET;
    let (operation, model) = match segments.as_slice() {
        ["model", model, op] if post => {
            let operation = match *op {
                "converse" => Operation::Converse,
                "converse-stream" => Operation::ConverseStream,
                "invoke" => Operation::InvokeModel,
                "invoke-with-response-stream" => Operation::InvokeModelWithResponseStream,
                "invoke-with-bidirectional-stream" => Operation::InvokeModelWithBidirectionalStream,
                "count-tokens" => Operation::CountTokens,
                _ => Operation::Unknown,
            };
            (operation, Some(*model))
        }
        ["guardrail", _, "version", _, "apply"] if post => (Operation::ApplyGuardrail, None),
        ["async-invoke"] if post => (Operation::StartAsyncInvoke, None),
        ["async-invoke"] if get => (Operation::ListAsyncInvokes, None),
        ["async-invoke", _] if get => (Operation::GetAsyncInvoke, None),
        [first, ..] if is_agent_runtime_root(first) => (Operation::AgentRuntime, None),
        [.., "v1", "chat", "completions"] if post => (Operation::ChatCompletions, None),
        [.., "v1", "responses"] if post => (Operation::Responses, None),
        [.., "v1", "messages"] if post => (Operation::AnthropicMessages, None),
        _ => (Operation::Unknown, None),
    };
    Classified {
        operation,
        model_id: model.map(|m| percent_decode_str(m).decode_utf8_lossy().into_owned()),
    }
}

/// First path segments of Bedrock Agent Runtime operations (service-2.json of
/// bedrock-agent-runtime): InvokeAgent, InvokeInlineAgent, Retrieve, RetrieveAndGenerate(Stream),
/// InvokeFlow, Rerank, GenerateQuery, OptimizePrompt, sessions and memory APIs.
fn is_agent_runtime_root(first: &str) -> bool {
    matches!(
        first,
        "agents"
            | "knowledgebases"
            | "retrieveAndGenerate"
            | "retrieveAndGenerateStream"
            | "flows"
            | "rerank"
            | "generateQuery"
            | "optimize-prompt"
            | "sessions"
            | "agentAliases"
    ) || first.ends_with("invoke-inline-agent")
}

/// The service a client signed for, from the `Credential=` scope of its SigV4
/// `Authorization` header (`AKID/date/region/service/aws4_request`). `None` when the request
/// is not SigV4-signed (e.g. a bearer token).
pub fn signed_service(authorization: &str) -> Option<&str> {
    let scope = authorization.split("Credential=").nth(1)?;
    let scope = scope.split([',', ' ']).next()?;
    let mut parts = scope.split('/');
    let (_akid, _date, _region, service) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some(service)
}

/// Cross-region inference profile prefixes (`us.anthropic.claude-...`).
const GEO_PREFIXES: [&str; 9] = [
    "us", "us-gov", "eu", "apac", "ap", "jp", "au", "ca", "global",
];

/// The base model id of a model id as clients spell it: the resource name of an ARN
/// (`arn:aws:bedrock:...:inference-profile/us.x.y` → `us.x.y`), without a geographic
/// inference-profile prefix (`us.x.y` → `x.y`).
pub fn model_key(model: &str) -> &str {
    let id = match model.strip_prefix("arn:") {
        Some(_) => model.rsplit('/').next().unwrap_or(model),
        None => model,
    };
    match id.split_once('.') {
        Some((geo, rest)) if GEO_PREFIXES.contains(&geo) && rest.contains('.') => rest,
        _ => id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn classifies_runtime_operations_and_decodes_arn_model_ids() {
        let c = classify(
            &Method::POST,
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-v2/converse-stream",
        );
        assert_eq!(c.operation, Operation::ConverseStream);
        assert_eq!(
            c.model_id.as_deref(),
            Some("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-v2")
        );
        assert_eq!(
            classify(&Method::POST, "/model/m/invoke").operation,
            Operation::InvokeModel
        );
        assert_eq!(
            classify(&Method::POST, "/guardrail/g1/version/1/apply").operation,
            Operation::ApplyGuardrail
        );
        assert_eq!(
            classify(&Method::GET, "/async-invoke/abc").operation,
            Operation::GetAsyncInvoke
        );
        assert_eq!(
            classify(&Method::GET, "/model/m/converse").operation,
            Operation::Unknown
        );
    }

    #[test]
    fn agent_runtime_paths_route_to_their_own_host() {
        let c = classify(&Method::POST, "/agents/A1/agentAliases/X/sessions/s/text");
        assert_eq!(c.operation, Operation::AgentRuntime);
        assert_eq!(c.operation.route(), Route::AgentRuntime);
        assert_eq!(
            classify(&Method::POST, "/knowledgebases/kb/retrieve").operation,
            Operation::AgentRuntime
        );
    }

    #[test]
    fn openai_and_anthropic_compatible_paths() {
        let op = |p: &str| classify(&Method::POST, p).operation;
        assert_eq!(
            op("/openai/v1/chat/completions"),
            Operation::ChatCompletions
        );
        assert_eq!(op("/v1/chat/completions"), Operation::ChatCompletions);
        assert_eq!(op("/openai/v1/responses"), Operation::Responses);
        assert_eq!(op("/v1/responses"), Operation::Responses);
        assert_eq!(op("/anthropic/v1/messages"), Operation::AnthropicMessages);
        assert_eq!(op("/v1/messages"), Operation::AnthropicMessages);
        assert!(op("/v1/messages").is_sse());
        assert_eq!(
            classify(&Method::GET, "/openai/v1/responses").operation,
            Operation::Unknown
        );
        assert_eq!(
            op("/mantle/v1/chat/completions"),
            Operation::ChatCompletions
        );
        assert_eq!(
            Route::of_path("/mantle/v1/responses?x=1"),
            (Some(Route::Mantle), "/v1/responses?x=1")
        );
        assert_eq!(Route::of_path("/mantlepiece"), (None, "/mantlepiece"));
        assert_eq!(Route::Mantle.signing_name(), "bedrock-mantle");
    }

    #[test]
    fn reads_service_from_credential_scope() {
        let auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc";
        assert_eq!(signed_service(auth), Some("sts"));
        assert_eq!(signed_service("Bearer xyz"), None);
    }
}
