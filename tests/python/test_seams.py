"""boto3 through the relay: seams that must not change the answer (issue 10).

Each case compares what boto3 received through a relay whose upstream breaks the first
attempt with an uninterrupted run of the same request against a clean simulator.
"""
import json

from conftest import add_faults, client, sim_log
from test_boto3 import converse_events

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def test_a_converse_stream_cut_before_its_max_tokens_still_stops_at_the_client_limit(relay, sim, clean_sim):
    prompt = "sim:len=40 sim:tag=py-limit Write about fjords"
    cfg = {"maxTokens": 20}
    add_faults(sim.url, [{"tag": "py-limit", "attempts": [1], "kind": "reset_after_events", "events": 11}])
    got, error = converse_events(client(relay.url), MODEL, prompt, inferenceConfig=cfg)
    reference, _ = converse_events(client(clean_sim.url), MODEL, prompt, inferenceConfig=cfg)
    assert error is None, error
    assert got == reference
    assert 'messageStop {"stopReason": "max_tokens"}' in got
    assert sum(1 for e in got if e.startswith("contentBlockDelta")) == 20


def test_a_used_up_limit_is_ended_by_the_relay_without_a_new_request(relay, sim, clean_sim):
    prompt = "sim:len=40 sim:tag=py-limit-end Write about fjords"
    cfg = {"maxTokens": 20}
    # messageStart + 20 deltas, then the connection resets before the stop.
    add_faults(sim.url, [{"tag": "py-limit-end", "attempts": [1], "kind": "reset_after_events", "events": 21}])
    got, error = converse_events(client(relay.url), MODEL, prompt, inferenceConfig=cfg)
    reference, _ = converse_events(client(clean_sim.url), MODEL, prompt, inferenceConfig=cfg)
    assert error is None, error
    assert got == reference
    assert len([e for e in sim_log(sim.url) if e.get("tag") == "py-limit-end"]) == 1


def test_a_mistral_chat_stream_cut_after_four_chunks_is_not_sent_twice(relay, sim, clean_sim):
    model = "mistral.mistral-large-2407-v1:0"
    body = {"messages": [{"role": "user", "content": "sim:len=40 sim:tag=py-mchat Write about owls"}],
            "max_tokens": 4096}
    add_faults(sim.url, [{"tag": "py-mchat", "attempts": [1], "kind": "reset_after_events", "events": 4}])

    def chunks(c):
        out = c.invoke_model_with_response_stream(modelId=model, body=json.dumps(body))
        return [json.loads(ev["chunk"]["bytes"]) for ev in out["body"]]

    got, reference = chunks(client(relay.url)), chunks(client(clean_sim.url))
    text = lambda cs: "".join(c["choices"][0]["message"]["content"] for c in cs)
    assert text(got) == text(reference)
    assert [c["choices"][0]["stop_reason"] for c in got] == [c["choices"][0]["stop_reason"] for c in reference]
