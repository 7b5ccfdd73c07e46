//! The integration tests, linked as one test binary: each file beside this one is a module
//! (`cargo test --test integration relay_e2e::` runs one of them). One binary instead of
//! one per file keeps the debug build small and its link time short. The tests that change
//! the process environment (`config_cli`, `signer_env`, `web_identity_env`) stay binaries
//! of their own.

mod sim_support;
mod support;

mod bidi_stream;
mod cli;
mod count_tokens;
mod credential_calls;
mod deploy_files;
mod fuzz_inputs;
mod h2_mass_reset;
mod no_prefill_heal;
mod no_prefill_tools;
mod reasoning;
mod relay_e2e;
mod resume_ladder;
mod resume_matrix;
mod resume_property;
mod resume_seams;
mod security;
mod sim_models;
mod sim_sdk;
mod sim_wire;
mod soak;
mod stream_seams;
mod throttle;
mod tool_calls;
