//! Fault rules: what goes wrong, on which request attempt.
//!
//! Owns the rule model shared by `--fault`, `--faults-file` and `POST /_sim/faults`, its
//! JSON/TOML form (`{"kind": "...", ...}` plus optional `operation`, `tag`, `attempts`), the
//! compact CLI form (`KIND[:k=v,...][@k=v,...]`), matching, and reproducible random faults.

use super::gen;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The in-stream exception types Bedrock models.
pub const EXCEPTION_TYPES: [&str; 6] = [
    "internalServerException",
    "modelStreamErrorException",
    "validationException",
    "throttlingException",
    "serviceUnavailableException",
    "modelTimeoutException",
];

/// What goes wrong. `events` counts whole frames sent before the fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// HTTP error before any body, with Bedrock's `x-amzn-ErrorType`.
    Status { code: u16 },
    /// Read the request, then reset the connection without a response.
    ResetBeforeHeaders,
    /// `events` whole frames, then a TCP reset.
    ResetAfterEvents { events: usize },
    /// `events` whole frames, half of the next, then a TCP reset.
    ResetMidFrame { events: usize },
    /// `events` whole frames, then close (FIN) without the chunked terminator.
    EofNoTerminator { events: usize },
    /// `events` frames (never the terminal ones), then a clean HTTP end.
    Truncate { events: usize },
    /// `events` frames, silence for `duration`, then the rest.
    Stall {
        events: usize,
        #[serde(with = "duration_text")]
        duration: Duration,
    },
    /// `events` frames, then a modelled exception frame of `type`, then a clean end.
    Exception {
        events: usize,
        #[serde(rename = "type")]
        exception_type: String,
    },
    /// `events` good frames, then one whose message CRC is wrong, then the rest.
    CorruptCrc { events: usize },
    /// Non-streaming: headers with content-length, half the body, then a TCP reset.
    ResetMidBody,
    /// Every frame from `events` on carries an extra string header of 40,000 bytes: valid
    /// EventStream (a header value may be 65,535 bytes), but over what the
    /// `aws-smithy-eventstream` encoder accepts, so such a frame cannot be re-encoded.
    OversizedHeader { events: usize },
}

impl Fault {
    /// The kind name as in JSON and the log.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Status { .. } => "status",
            Fault::ResetBeforeHeaders => "reset_before_headers",
            Fault::ResetAfterEvents { .. } => "reset_after_events",
            Fault::ResetMidFrame { .. } => "reset_mid_frame",
            Fault::EofNoTerminator { .. } => "eof_no_terminator",
            Fault::Truncate { .. } => "truncate",
            Fault::Stall { .. } => "stall",
            Fault::Exception { .. } => "exception",
            Fault::CorruptCrc { .. } => "corrupt_crc",
            Fault::ResetMidBody => "reset_mid_body",
            Fault::OversizedHeader { .. } => "oversized_header",
        }
    }

    /// The HTTP status an exception of this type has as an error response (a stream faulted
    /// with it before any frame, answered as an error instead).
    pub fn exception_status(exception_type: &str) -> u16 {
        match exception_type {
            "throttlingException" => 429,
            "validationException" => 400,
            "serviceUnavailableException" => 503,
            "modelTimeoutException" => 408,
            "modelStreamErrorException" => 424,
            _ => 500,
        }
    }

    /// Where a stream of `frames` frames (the last `terminal` of them terminal) is cut: the
    /// index of the first frame the fault replaces or precedes; `usize::MAX` for faults that
    /// do not cut a stream.
    pub fn cut_at(&self, frames: usize, terminal: usize) -> usize {
        match self {
            Fault::ResetMidBody => frames / 2,
            Fault::Truncate { events } => (*events).min(frames.saturating_sub(terminal)),
            Fault::CorruptCrc { events } => (*events).min(frames.saturating_sub(1)),
            Fault::ResetAfterEvents { events }
            | Fault::ResetMidFrame { events }
            | Fault::EofNoTerminator { events }
            | Fault::Stall { events, .. }
            | Fault::Exception { events, .. } => (*events).min(frames),
            Fault::Status { .. } | Fault::ResetBeforeHeaders | Fault::OversizedHeader { .. } => {
                usize::MAX
            }
        }
    }

    fn validate(&self) -> Result<(), FaultError> {
        match self {
            Fault::Status { code } if !(400..=599).contains(code) => Err(FaultError::Invalid(
                format!("status code {code} is not an error"),
            )),
            Fault::Exception { exception_type, .. }
                if !EXCEPTION_TYPES.contains(&exception_type.as_str()) =>
            {
                Err(FaultError::Invalid(format!(
                    "exception type {exception_type} is not one of {EXCEPTION_TYPES:?}"
                )))
            }
            _ => Ok(()),
        }
    }
}

mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Millis(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => humantime::parse_duration(&t).map_err(serde::de::Error::custom),
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
        }
    }
}

/// A matcher plus a fault. All matcher fields are optional; absent means "any".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Operation name as `ops::Operation::name` (`ConverseStream`, ...), any case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Matches when the request body contains `sim:tag=<tag>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// 1-based attempt numbers of the conversation this rule fires on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<u32>>,
    #[serde(flatten)]
    pub fault: Fault,
}

/// Why a rule could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("invalid fault rule: {0}")]
    Invalid(String),
    #[error("invalid fault rule JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid fault rule TOML: {0}")]
    Toml(#[from] toml::de::Error),
}

impl FaultRule {
    /// Does this rule fire for an attempt?
    pub fn matches(&self, operation: &str, body: &[u8], attempt: u32) -> bool {
        self.operation
            .as_ref()
            .is_none_or(|op| op.eq_ignore_ascii_case(operation))
            && self.attempts.as_ref().is_none_or(|a| a.contains(&attempt))
            && self.tag.as_ref().is_none_or(|t| {
                let needle = format!("sim:tag={t}");
                let hit = body
                    .windows(needle.len())
                    .position(|w| w == needle.as_bytes());
                // The tag must end there (`t1` must not match `sim:tag=t10`).
                hit.is_some_and(|at| {
                    body.get(at + needle.len())
                        .is_none_or(|c| !c.is_ascii_alphanumeric() && *c != b'_' && *c != b'-')
                })
            })
    }

    /// Parse the compact CLI form: `KIND[:k=v,k=v][@operation=X,tag=Y,attempts=1+2]`.
    /// `attempts` takes `+`-separated numbers or a range `1..3`; `duration` takes humantime
    /// text (`250ms`, `2s`).
    pub fn parse_spec(spec: &str) -> Result<FaultRule, FaultError> {
        let (fault_part, matcher) = spec.split_once('@').unwrap_or((spec, ""));
        let (kind, params) = fault_part.split_once(':').unwrap_or((fault_part, ""));
        let mut obj = serde_json::Map::new();
        obj.insert("kind".into(), kind.trim().into());
        for (k, v) in pairs(params)? {
            let value = match k {
                "events" | "code" => serde_json::Value::from(num(k, v)?),
                _ => serde_json::Value::from(v),
            };
            obj.insert(k.to_owned(), value);
        }
        for (k, v) in pairs(matcher)? {
            let value = match k {
                "attempts" => serde_json::Value::from(attempt_list(v)?),
                "operation" | "tag" => serde_json::Value::from(v),
                _ => return Err(FaultError::Invalid(format!("unknown matcher key {k}"))),
            };
            obj.insert(k.to_owned(), value);
        }
        let rule: FaultRule = serde_json::from_value(serde_json::Value::Object(obj))?;
        rule.fault.validate()?;
        Ok(rule)
    }

    /// Parse a JSON list of rules (the control endpoint and `--faults-file *.json`).
    pub fn parse_json_list(text: &str) -> Result<Vec<FaultRule>, FaultError> {
        let rules: Vec<FaultRule> = serde_json::from_str(text)?;
        rules.iter().try_for_each(|r| r.fault.validate())?;
        Ok(rules)
    }

    /// Parse a TOML file of `[[fault]]` tables (`--faults-file *.toml`).
    pub fn parse_toml_list(text: &str) -> Result<Vec<FaultRule>, FaultError> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            fault: Vec<FaultRule>,
        }
        let file: File = toml::from_str(text)?;
        file.fault.iter().try_for_each(|r| r.fault.validate())?;
        Ok(file.fault)
    }
}

fn pairs(text: &str) -> Result<Vec<(&str, &str)>, FaultError> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| FaultError::Invalid(format!("expected key=value, got {p:?}")))
        })
        .collect()
}

fn num(key: &str, v: &str) -> Result<u64, FaultError> {
    v.parse()
        .map_err(|_| FaultError::Invalid(format!("{key} must be a number, got {v:?}")))
}

fn attempt_list(v: &str) -> Result<Vec<u32>, FaultError> {
    if let Some((a, b)) = v.split_once("..") {
        let (a, b) = (num("attempts", a)?, num("attempts", b)?);
        return Ok((a..=b.min(a + 1000)).map(|n| n as u32).collect());
    }
    v.split('+')
        .map(|n| num("attempts", n).map(|n| n as u32))
        .collect()
}

/// A reproducible random fault for an attempt: with probability `rate`, a kind and position
/// drawn from `(seed, conversation, attempt)` only, so a rerun with the same requests
/// injects the same faults whatever the timing.
pub fn random_fault(
    rate: f64,
    seed: u64,
    conversation: u64,
    attempt: u32,
    stream: bool,
) -> Option<Fault> {
    if rate <= 0.0 {
        return None;
    }
    let mut rng = gen::Rng::new(gen::hash_parts([
        seed.to_string().as_str(),
        &conversation.to_string(),
        &attempt.to_string(),
    ]));
    let roll = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    if roll >= rate {
        return None;
    }
    let events = rng.below(24) as usize;
    if !stream {
        return Some(match rng.below(3) {
            0 => Fault::Status {
                code: [429, 500, 503][rng.below(3) as usize],
            },
            1 => Fault::ResetBeforeHeaders,
            _ => Fault::ResetMidBody,
        });
    }
    Some(match rng.below(9) {
        0 => Fault::Status {
            code: [429, 500, 503][rng.below(3) as usize],
        },
        1 => Fault::ResetBeforeHeaders,
        2 => Fault::ResetAfterEvents { events },
        3 => Fault::ResetMidFrame { events },
        4 => Fault::EofNoTerminator { events },
        5 => Fault::Truncate { events },
        6 => Fault::Exception {
            events,
            exception_type: EXCEPTION_TYPES[rng.below(6) as usize].to_owned(),
        },
        7 => Fault::CorruptCrc { events },
        _ => Fault::Stall {
            events,
            duration: Duration::from_millis(200 + rng.below(800)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compact_specs() {
        let r = FaultRule::parse_spec("reset_after_events:events=5@tag=t1,attempts=1").unwrap();
        assert_eq!(r.fault, Fault::ResetAfterEvents { events: 5 });
        assert_eq!(r.tag.as_deref(), Some("t1"));
        assert_eq!(r.attempts, Some(vec![1]));
        let r = FaultRule::parse_spec(
            "stall:events=3,duration=250ms@attempts=1..3,operation=ConverseStream",
        )
        .unwrap();
        assert_eq!(
            r.fault,
            Fault::Stall {
                events: 3,
                duration: Duration::from_millis(250)
            }
        );
        assert_eq!(r.attempts, Some(vec![1, 2, 3]));
        let r =
            FaultRule::parse_spec("exception:events=2,type=modelStreamErrorException@attempts=1+4")
                .unwrap();
        assert_eq!(r.attempts, Some(vec![1, 4]));
        assert_eq!(
            FaultRule::parse_spec("status:code=429").unwrap().fault,
            Fault::Status { code: 429 }
        );
        assert_eq!(
            FaultRule::parse_spec("reset_before_headers")
                .unwrap()
                .fault
                .kind(),
            "reset_before_headers"
        );
        for bad in [
            "nope",
            "status:code=200",
            "exception:events=1,type=bogus",
            "truncate:events=x",
            "truncate:events=1@colour=red",
            "truncate:events",
        ] {
            assert!(FaultRule::parse_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_json_and_toml_lists() {
        let json = r#"[{"kind":"corrupt_crc","events":4,"tag":"x"},{"kind":"stall","events":1,"duration":1500}]"#;
        let rules = FaultRule::parse_json_list(json).unwrap();
        assert_eq!(
            rules[1].fault,
            Fault::Stall {
                events: 1,
                duration: Duration::from_millis(1500)
            }
        );
        let toml = "[[fault]]\nkind = \"truncate\"\nevents = 7\nattempts = [2]\n";
        let rules = FaultRule::parse_toml_list(toml).unwrap();
        assert_eq!(rules[0].fault, Fault::Truncate { events: 7 });
        assert!(
            FaultRule::parse_json_list(r#"[{"kind":"truncate","events":1,"bogus":1}]"#).is_err()
        );
        let back = serde_json::to_string(&rules[0]).unwrap();
        assert_eq!(
            FaultRule::parse_json_list(&format!("[{back}]")).unwrap(),
            rules
        );
    }

    #[test]
    fn matching_by_operation_tag_and_attempt() {
        let r =
            FaultRule::parse_spec("truncate:events=1@operation=converse_stream,tag=t1,attempts=2")
                .unwrap();
        assert!(
            !r.matches("ConverseStream", b"x sim:tag=t1", 2),
            "operation names are exact"
        );
        let r =
            FaultRule::parse_spec("truncate:events=1@operation=conversestream,tag=t1,attempts=2")
                .unwrap();
        assert!(r.matches("ConverseStream", b"{\"text\":\"x sim:tag=t1\"}", 2));
        assert!(!r.matches("ConverseStream", b"x sim:tag=t1", 1));
        assert!(!r.matches("ConverseStream", b"x sim:tag=t10", 2));
        assert!(!r.matches("Converse", b"x sim:tag=t1", 2));
    }

    #[test]
    fn random_faults_are_reproducible_and_respect_the_rate() {
        let picks: Vec<_> = (0..200).map(|c| random_fault(0.3, 7, c, 1, true)).collect();
        let again: Vec<_> = (0..200).map(|c| random_fault(0.3, 7, c, 1, true)).collect();
        assert_eq!(picks, again);
        let hits = picks.iter().filter(|p| p.is_some()).count();
        assert!((30..90).contains(&hits), "{hits}");
        assert!((0..50).all(|c| random_fault(0.0, 7, c, 1, true).is_none()));
    }
}
