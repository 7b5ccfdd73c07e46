"""The OpenAI- and Anthropic-compatible streaming paths through the relay, with the real SDKs
(`openai`, `anthropic`) as clients: events arrive as the upstream produces them (never
buffered whole), the text is the model's, the client's own API key never reaches Bedrock,
and a stream cut on every attempt (healing impossible) ends in an error the SDK raises, never
a silent end. Healing itself: test_sse_heal.py.

The simulator paces its deltas (`--inter-token`), so "as produced" is measured against the
upstream's own pacing: the first event must arrive well before the stream ends.
"""
import time

import anthropic
import openai
import pytest

from conftest import RELAY_KEY, RELAY_SECRET, Proc, add_faults, clean_env, free_port, sim_log, start_sim, wait_for

GAP = "40ms"
PIECES = 25  # 25 deltas x 40 ms: the upstream needs about a second
OPENAI_MODEL = "openai.gpt-oss-120b-1:0"
CLAUDE = "anthropic.claude-sonnet-4-6"
CLIENT_API_KEY = "client-api-key-the-relay-must-not-forward"


@pytest.fixture(scope="module")
def paced():
    """A pacing simulator that accepts only the relay's keys, a clean one, and a relay."""
    sim = start_sim("--access-key-id", RELAY_KEY, "--secret-access-key", RELAY_SECRET, "--inter-token", GAP)
    clean = start_sim("--inter-token", GAP)
    port, admin = free_port(), free_port()
    env = clean_env(AWS_ACCESS_KEY_ID=RELAY_KEY, AWS_SECRET_ACCESS_KEY=RELAY_SECRET, AWS_REGION="us-east-1",
                    BEDROCK_RELAY_BACKOFF_BASE="1ms", BEDROCK_RELAY_BACKOFF_MAX="5ms")
    # The same simulator stands in for bedrock-mantle: paths under /mantle/ go there.
    relay = Proc(["serve", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
                  "--upstream", sim.url, "--mantle-upstream", sim.url], env, f"http://127.0.0.1:{port}")
    wait_for(f"http://127.0.0.1:{admin}/healthz")
    yield sim, clean, relay
    for p in (relay, sim, clean):
        p.stop()


def oai(base):
    return openai.OpenAI(base_url=base + "/openai/v1", api_key=CLIENT_API_KEY, max_retries=0, timeout=30)


def claude(base):
    return anthropic.Anthropic(base_url=base + "/anthropic", api_key=CLIENT_API_KEY, max_retries=0, timeout=30)


def chat_stream(base, prompt):
    """(text, seconds to the first content delta, seconds to the end, finish reasons)."""
    start = time.monotonic()
    first, text, finishes = None, "", []
    stream = oai(base).chat.completions.create(
        model=OPENAI_MODEL, stream=True, messages=[{"role": "user", "content": prompt}])
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                first = first or time.monotonic() - start
                text += choice.delta.content
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    return text, first, time.monotonic() - start, finishes


def test_chat_completions_stream_arrives_as_the_upstream_produces_it(paced):
    sim, clean, relay = paced
    prompt = f"Write about lanterns sim:len={PIECES} sim:tag=sse-pace"
    want, _, _, _ = chat_stream(clean.url, prompt)
    text, first, total, finishes = chat_stream(relay.url, prompt)
    assert text == want and len(text) > 40
    assert finishes == ["stop"]
    # Buffered whole, the first delta would come at the very end (about `total`).
    assert first < total / 2, f"first delta after {first:.3f}s of {total:.3f}s"
    entry = [e for e in sim_log(sim.url) if e.get("tag") == "sse-pace"][-1]
    assert entry["operation"] == "ChatCompletions"
    assert entry["signature"] == "valid", "signed by the relay, not the client's API key"
    assert CLIENT_API_KEY not in str(entry)


def test_responses_stream_is_forwarded_whole_and_in_order(paced):
    sim, clean, relay = paced
    prompt = "Write about kites sim:len=12 sim:tag=sse-resp"

    def run(base):
        deltas, completed, seqs = [], None, []
        with oai(base).responses.stream(model=OPENAI_MODEL, input=prompt) as stream:
            for event in stream:
                seqs.append(event.sequence_number)
                if event.type == "response.output_text.delta":
                    deltas.append(event.delta)
                elif event.type == "response.completed":
                    completed = event.response
        return "".join(deltas), completed, seqs

    want, _, _ = run(clean.url)
    text, completed, seqs = run(relay.url)
    assert text == want and text
    assert completed is not None and completed.output_text == want
    assert seqs == list(range(len(seqs)))


def test_anthropic_messages_stream_through_the_relay(paced):
    sim, clean, relay = paced
    prompt = "Write about owls sim:len=12 sim:tag=sse-msg"

    def run(base):
        with claude(base).messages.stream(model=CLAUDE, max_tokens=200,
                                          messages=[{"role": "user", "content": prompt}]) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        return text, final

    want, _ = run(clean.url)
    text, final = run(relay.url)
    assert text == want and text
    assert final.stop_reason == "end_turn"


def test_a_stream_cut_on_every_attempt_raises_the_apis_error(paced):
    """Healing impossible (every attempt is cut, max_resumes runs out): the API's error event,
    which the SDK raises, after a prefix of the answer; never a silent end."""
    sim, clean, relay = paced
    tag = "sse-cut-always"
    prompt = f"Write about ferns sim:len=20 sim:tag={tag}"
    want, _, _, _ = chat_stream(clean.url, prompt)
    add_faults(sim.url, [{"kind": "reset_after_events", "events": 6, "tag": tag}])
    got = ""
    with pytest.raises(openai.APIError) as err:
        stream = oai(relay.url).chat.completions.create(
            model=OPENAI_MODEL, stream=True, messages=[{"role": "user", "content": prompt}])
        for chunk in stream:
            for choice in chunk.choices:
                got += choice.delta.content or ""
    assert "bedrock-relay" in str(err.value) and "max_resumes" in str(err.value)
    assert want.startswith(got) and got, "what arrived is a prefix of the answer"
    tag = "sse-cut-msg-always"
    add_faults(sim.url, [{"kind": "reset_after_events", "events": 6, "tag": tag}])
    with pytest.raises(anthropic.APIError) as err:
        with claude(relay.url).messages.stream(
                model=CLAUDE, max_tokens=200,
                messages=[{"role": "user", "content": f"Write about moths sim:len=20 sim:tag={tag}"}]) as stream:
            for _ in stream.text_stream:
                pass
    assert "bedrock-relay" in str(err.value)


def test_bedrock_mantle_through_the_relay_by_base_url_alone(paced):
    """An unmodified OpenAI SDK reaches bedrock-mantle through the relay with
    base_url=http://relay/mantle/v1; the relay signs for `bedrock-mantle`."""
    sim, clean, relay = paced
    prompt = "Write about glaciers sim:len=10 sim:tag=sse-mantle"
    mantle = openai.OpenAI(base_url=relay.url + "/mantle/v1", api_key=CLIENT_API_KEY, max_retries=0, timeout=30)
    text = ""
    for chunk in mantle.chat.completions.create(model=OPENAI_MODEL, stream=True,
                                                 messages=[{"role": "user", "content": prompt}]):
        for choice in chunk.choices:
            text += choice.delta.content or ""
    want, _, _, _ = chat_stream(clean.url, prompt)
    assert text == want and text
    entry = [e for e in sim_log(sim.url) if e.get("tag") == "sse-mantle"][-1]
    assert entry["signature"] == "valid"
    assert entry["service"] == "bedrock-mantle"
    runtime = [e for e in sim_log(sim.url) if e.get("tag") == "sse-pace"]
    assert all(e["service"] == "bedrock" for e in runtime)
