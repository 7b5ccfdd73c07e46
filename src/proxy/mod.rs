//! The relay's request path: classify → limits → retry/resume → sign → send.
//!
//! (Skeleton: filled in by the relay-core work.)
