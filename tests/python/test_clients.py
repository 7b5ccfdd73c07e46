"""Client guides, tested: every client of the README's table, pointed at the relay the way the
guide says, gets the whole answer although the simulator breaks the first attempt — and that
answer is identical to what the same client gets straight from a clean simulator.

boto3 and aws-sdk-rust have their own suites (test_boto3.py, tests/*.rs); aws-sdk-js-v3 is in
tests/node. Each test here checks in the simulator's log that the fault really hit attempt 1.
"""
import json
import os
import subprocess
import sys

import pytest
from botocore.config import Config

from conftest import CLIENT_KEY, CLIENT_SECRET, add_faults, clean_env, sim_log

CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
NOVA = "amazon.nova-pro-v1:0"
REGION = "us-east-1"
NO_RETRY = Config(retries={"total_max_attempts": 1}, read_timeout=30)


def prompt(tag):
    return f"Write about estuaries and tides sim:len=60 sim:tag={tag}"


def break_first_attempt(sim, tag, fault):
    add_faults(sim.url, [{"tag": tag, "attempts": [1], **fault}])


def assert_healed(sim, tag, fault_kind):
    """The faulty simulator saw the broken first attempt and exactly one more."""
    entries = [e for e in sim_log(sim.url) if e.get("tag") == tag]
    assert len(entries) == 2, entries
    assert fault_kind in (entries[0].get("fault") or ""), entries[0]
    assert all(e["signature"] == "valid" for e in entries), "the relay re-signs every attempt"


# --- AWS CLI -------------------------------------------------------------------------------


def aws_cli(args, **env):
    """`aws ...` from the pip package (`python -m awscli`), with only the given environment."""
    env = clean_env(AWS_ACCESS_KEY_ID=CLIENT_KEY, AWS_SECRET_ACCESS_KEY=CLIENT_SECRET,
                    AWS_DEFAULT_REGION=REGION, AWS_MAX_ATTEMPTS="1", **env)
    out = subprocess.run([sys.executable, "-m", "awscli", *args, "--output", "json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def cli_converse(text, endpoint=None, **env):
    args = ["bedrock-runtime", "converse", "--model-id", NOVA,
            "--messages", json.dumps([{"role": "user", "content": [{"text": text}]}])]
    if endpoint:
        args += ["--endpoint-url", endpoint]
    out = aws_cli(args, **env)
    return out["output"], out["stopReason"]


@pytest.mark.parametrize("how", ["--endpoint-url", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"])
def test_aws_cli_converse_survives_a_reset_mid_body(relay, sim, clean_sim, how):
    tag = f"cli-{how.strip('-').lower()}"
    break_first_attempt(sim, tag, {"kind": "reset_mid_body"})
    if how == "--endpoint-url":
        got = cli_converse(prompt(tag), endpoint=relay.url)
    else:
        got = cli_converse(prompt(tag), AWS_ENDPOINT_URL_BEDROCK_RUNTIME=relay.url)
    assert got == cli_converse(prompt(tag), endpoint=clean_sim.url)
    assert_healed(sim, tag, "reset_mid_body")


# --- Anthropic's Bedrock SDK (InvokeModelWithResponseStream, Claude messages format) --------


def anthropic_stream(base_url, text, use_env=False):
    from anthropic import AnthropicBedrock

    kw = dict(aws_region=REGION, aws_access_key=CLIENT_KEY, aws_secret_key=CLIENT_SECRET, max_retries=0)
    if use_env:
        os.environ["ANTHROPIC_BEDROCK_BASE_URL"] = base_url
        try:
            client = AnthropicBedrock(**kw)
        finally:
            del os.environ["ANTHROPIC_BEDROCK_BASE_URL"]
    else:
        client = AnthropicBedrock(base_url=base_url, **kw)
    assert str(client.base_url).rstrip("/") == base_url
    with client.messages.stream(model=CLAUDE, max_tokens=1024,
                                messages=[{"role": "user", "content": text}]) as stream:
        deltas = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert deltas == "".join(b.text for b in final.content if b.type == "text")
    return deltas, final.stop_reason


@pytest.mark.parametrize("how", ["base_url", "ANTHROPIC_BEDROCK_BASE_URL"])
def test_anthropic_bedrock_sdk_stream_is_healed(relay, sim, clean_sim, how):
    tag = f"anthropic-{how.lower()}"
    break_first_attempt(sim, tag, {"kind": "reset_after_events", "events": 9})
    got = anthropic_stream(relay.url, prompt(tag), use_env=how != "base_url")
    reference = anthropic_stream(clean_sim.url, prompt(tag))
    assert len(reference[0]) > 100
    assert got == reference
    assert_healed(sim, tag, "reset_after_events")


# --- LangChain ChatBedrockConverse -----------------------------------------------------------


def langchain_stream(endpoint, text):
    from langchain_aws import ChatBedrockConverse

    llm = ChatBedrockConverse(model=CLAUDE, endpoint_url=endpoint, region_name=REGION,
                              aws_access_key_id=CLIENT_KEY, aws_secret_access_key=CLIENT_SECRET,
                              config=NO_RETRY)
    chunks = list(llm.stream(text))
    assert len(chunks) > 5, "a stream, not one message"
    return "".join(c.text for c in chunks)


def test_langchain_chat_bedrock_converse_stream_is_healed(relay, sim, clean_sim):
    tag = "langchain"
    break_first_attempt(sim, tag, {"kind": "exception", "events": 11, "type": "modelStreamErrorException"})
    got = langchain_stream(relay.url, prompt(tag))
    reference = langchain_stream(clean_sim.url, prompt(tag))
    assert len(reference) > 100
    assert got == reference
    assert_healed(sim, tag, "exception")


# --- LiteLLM as a client ---------------------------------------------------------------------


def litellm_stream(endpoint, model, text, use_env=False):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import
    import litellm

    kw = dict(aws_region_name=REGION, aws_access_key_id=CLIENT_KEY, aws_secret_access_key=CLIENT_SECRET,
              max_tokens=1024, stream=True, num_retries=0)
    if use_env:
        os.environ["AWS_BEDROCK_RUNTIME_ENDPOINT"] = endpoint
    else:
        kw["aws_bedrock_runtime_endpoint"] = endpoint
    try:
        resp = litellm.completion(model=model, messages=[{"role": "user", "content": text}], **kw)
        parts = [c.choices[0].delta.content or "" for c in resp]
    finally:
        os.environ.pop("AWS_BEDROCK_RUNTIME_ENDPOINT", None)
    assert len(parts) > 5, "a stream, not one message"
    return "".join(parts)


@pytest.mark.parametrize("model,use_env", [(f"bedrock/converse/{CLAUDE}", False), (f"bedrock/invoke/{CLAUDE}", False),
                                           (f"bedrock/converse/{CLAUDE}", True)],
                         ids=["converse", "invoke", "converse-AWS_BEDROCK_RUNTIME_ENDPOINT"])
def test_litellm_bedrock_stream_is_healed(relay, sim, clean_sim, model, use_env):
    tag = f"litellm-{model.split('/')[1]}-{use_env}"
    break_first_attempt(sim, tag, {"kind": "reset_mid_frame", "events": 10})
    got = litellm_stream(relay.url, model, prompt(tag), use_env=use_env)
    reference = litellm_stream(clean_sim.url, model, prompt(tag))
    assert len(reference) > 100
    assert got == reference
    assert_healed(sim, tag, "reset_mid_frame")
