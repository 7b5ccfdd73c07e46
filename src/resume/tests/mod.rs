//! The resume core's own tests: `core` (Converse transcripts, plans, splices), `invoke`
//! (every invoke family), `seams` (limits, usage, opaque streams), `prop` (property tests
//! against a fake model), `sdk_check` (what aws-sdk-bedrockruntime makes of spliced
//! streams); `util` and `wire` build the streams they feed.

mod core;
mod invoke;
mod prop;
mod sdk_check;
mod seams;
mod util;
mod wire;
