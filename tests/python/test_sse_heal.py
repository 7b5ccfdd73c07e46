"""SSE streams healed like EventStream, through the real SDKs (`openai`, `anthropic`): a Chat
Completions, a Responses and an Anthropic Messages stream cut mid-answer (reset, EOF,
truncation, stall, the upstream's error event) arrive whole and once — byte-exact at
temperature 0 (the same text as an unbroken stream from a clean simulator) and coherent when
sampled — with one role delta / one `finish_reason` / one usage chunk / one `[DONE]`
(Chat Completions), continuous sequence numbers and one `response.completed` (Responses),
one `message_start` and one `message_stop` (Messages). Where healing is impossible
(`max_resumes = 0`, or replay of a sampled answer) the SDK raises the API's error.

One relay continues with a prefill (gpt-oss and Claude 4.5 allowed to take one), instructed
continuation for Claude Sonnet 4.6; another has the defaults (replay for gpt-oss); a third
never resumes; a fourth continues gpt-oss by instruction.
"""
import json
import urllib.request

import anthropic
import openai
import pytest

from conftest import RELAY_KEY, RELAY_SECRET, Proc, add_faults, clean_env, free_port, sim_log, start_sim, wait_for

GPT = "openai.gpt-oss-120b-1:0"
CLAUDE_PREFILL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
CLAUDE_INSTRUCTED = "anthropic.claude-sonnet-4-6"
FAULTS = {
    "reset": {"kind": "reset_after_events", "events": 6},
    "eof": {"kind": "eof_no_terminator", "events": 6},
    "truncate": {"kind": "truncate", "events": 6},
    "stall": {"kind": "stall", "events": 6, "duration": "3s"},
    "exception": {"kind": "exception", "events": 6, "type": "internalServerException"},
}


def start_relay(sim, tmp_path, name, toml, *extra):
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(toml)
    port, admin = free_port(), free_port()
    env = clean_env(AWS_ACCESS_KEY_ID=RELAY_KEY, AWS_SECRET_ACCESS_KEY=RELAY_SECRET, AWS_REGION="us-east-1",
                    BEDROCK_RELAY_BACKOFF_BASE="1ms", BEDROCK_RELAY_BACKOFF_MAX="5ms")
    relay = Proc(["serve", "--config", str(cfg), "--listen", f"127.0.0.1:{port}",
                  "--admin-listen", f"127.0.0.1:{admin}", "--upstream", sim.url, "--stall-timeout", "1s",
                  *extra], env, f"http://127.0.0.1:{port}")
    relay.admin = f"http://127.0.0.1:{admin}"
    wait_for(relay.admin + "/healthz")
    return relay


@pytest.fixture(scope="module")
def relays(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sseheal")
    sim = start_sim("--access-key-id", RELAY_KEY, "--secret-access-key", RELAY_SECRET)
    clean = start_sim()
    heal = start_relay(sim, tmp, "heal", "[resume]\nprefill_models = ['claude-sonnet-4-5', 'gpt-oss']\n"
                                         "instructed_models = ['claude-sonnet-4-6']\n")
    default = start_relay(sim, tmp, "default", "")
    never = start_relay(sim, tmp, "never", "", "--max-resumes", "0")
    instructed = start_relay(sim, tmp, "instructed", "[resume]\ninstructed_models = ['gpt-oss']\n")
    yield sim, clean, heal, default, never, instructed
    for p in (heal, default, never, instructed, sim, clean):
        p.stop()


def oai(base):
    return openai.OpenAI(base_url=base + "/openai/v1", api_key="k", max_retries=0, timeout=30)


def chat(base, prompt, **kw):
    """(text, finish reasons, role deltas, usage chunks) of a streamed completion."""
    text, finishes, roles, usage = "", [], 0, []
    stream = oai(base).chat.completions.create(model=kw.pop("model", GPT), stream=True,
                                               messages=[{"role": "user", "content": prompt}], **kw)
    for chunk in stream:
        if chunk.usage:
            usage.append(chunk.usage)
        for choice in chunk.choices:
            roles += bool(choice.delta.role)
            text += choice.delta.content or ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    return text, finishes, roles, usage


def responses(base, prompt, **kw):
    """(delta text, completed response, sequence numbers, event types)."""
    deltas, completed, seqs, types = [], None, [], []
    with oai(base).responses.stream(model=kw.pop("model", GPT), input=prompt, **kw) as stream:
        for event in stream:
            seqs.append(event.sequence_number)
            types.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type == "response.completed":
                completed = event.response
    return "".join(deltas), completed, seqs, types


def messages(base, model, prompt, **kw):
    c = anthropic.Anthropic(base_url=base + "/anthropic", api_key="k", max_retries=0, timeout=30)
    events = []
    with c.messages.stream(model=model, max_tokens=300, messages=[{"role": "user", "content": prompt}],
                           **kw) as stream:
        for event in stream:
            events.append(event.type)
        final = stream.get_final_message()
    return final, events


def attempts(sim, tag):
    return [e for e in sim_log(sim.url) if e.get("tag") == tag]


def cut(sim, tag, fault):
    add_faults(sim.url, [{**FAULTS[fault], "tag": tag, "attempts": [1]}])


def resumes(relay, strategy):
    text = urllib.request.urlopen(relay.admin + "/metrics").read().decode()
    want = f'bedrock_relay_stream_resumes_total{{outcome="success",strategy="{strategy}"}}'
    line = [l for l in text.splitlines() if l.startswith(want)]
    return float(line[0].split()[-1]) if line else 0.0


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_cut_chat_completion_heals_whole_and_once(relays, fault):
    sim, clean, heal, _, _, _ = relays
    tag = f"heal-chat-{fault}"
    prompt = f"Write about ferns sim:len=20 sim:tag={tag}"
    usage = {"stream_options": {"include_usage": True}}
    want, _, _, want_usage = chat(clean.url, prompt, **usage)
    before = resumes(heal, "prefill")
    cut(sim, tag, fault)
    text, finishes, roles, got_usage = chat(heal.url, prompt, **usage)
    assert text == want and len(text) > 40
    assert (finishes, roles, len(got_usage)) == (["stop"], 1, 1)
    # Usage is summed over attempts: the cut attempt's prompt was paid for too.
    assert got_usage[0].completion_tokens == want_usage[0].completion_tokens
    assert got_usage[0].prompt_tokens > want_usage[0].prompt_tokens
    log = attempts(sim, tag)
    assert len(log) == 2 and log[1]["prefill"] and text.startswith(log[1]["prefill"].strip())
    assert resumes(heal, "prefill") == before + 1


def test_a_cut_chat_completion_heals_by_replay_where_no_prefill(relays):
    sim, clean, _, default, _, _ = relays
    tag = "heal-chat-replay"
    prompt = f"Write about ferns sim:len=20 sim:tag={tag}"
    want, _, _, _ = chat(clean.url, prompt)
    cut(sim, tag, "reset")
    text, finishes, roles, _ = chat(default.url, prompt)
    assert (text, finishes, roles) == (want, ["stop"], 1)
    assert resumes(default, "replay") >= 1


def test_chat_completions_and_responses_heal_by_instructed_continuation(relays):
    """A model that takes no prefill: the delivered text as the assistant's turn, then a user
    turn asking to continue; the echoed overlap is cut at the seam."""
    sim, clean, _, _, _, instructed = relays
    tag = "heal-chat-instructed"
    prompt = f"Write about ferns sim:len=30 sim:tag={tag}"
    want, _, _, _ = chat(clean.url, prompt)
    cut(sim, tag, "reset")
    text, finishes, roles, _ = chat(instructed.url, prompt)
    assert (text, finishes, roles) == (want, ["stop"], 1)
    log = attempts(sim, tag)
    assert log[1]["continuation"] and log[1]["body"]["messages"][-1]["role"] == "user"
    tag = "heal-resp-instructed"
    prompt = f"Write about kites sim:len=30 sim:tag={tag}"
    want, _, _, _ = responses(clean.url, prompt)
    cut(sim, tag, "reset")
    text, completed, seqs, _ = responses(instructed.url, prompt)
    assert text == want and completed.output_text == want and seqs == list(range(len(seqs)))
    assert attempts(sim, tag)[1]["continuation"]
    assert resumes(instructed, "instructed") == 2


@pytest.mark.parametrize("api", ["messages", "chat", "responses"])
def test_sampled_no_prefill_streams_heal_into_the_answer_the_model_meant(relays, api):
    """Claude Sonnet 4.6 takes no prefill and samples (temperature 1): the default relay
    continues it by instruction; the simulator's continuations echo, restart or add a
    preamble as real ones do, and the client gets exactly the answer the model meant (the
    simulator logs it), or, where the restart differs, the API's error after the model's
    own text."""
    sim, _, _, default, _, _ = relays
    healed = 0
    for i in range(6):
        tag = f"heal-sampled-{api}-{i}"
        prompt = f"Tell me about tides, part {i} sim:len={30 + 7 * i} sim:tag={tag}"
        add_faults(sim.url, [{**FAULTS["reset"], "events": 6 + 3 * i, "tag": tag, "attempts": [1]}])
        try:
            if api == "messages":
                final, _ = messages(default.url, CLAUDE_INSTRUCTED, prompt, extra_body={"temperature": 1.0})
                text = final.content[0].text
            elif api == "chat":
                text, finishes, roles, _ = chat(default.url, prompt, model=CLAUDE_INSTRUCTED, temperature=1.0)
                assert (finishes, roles) == (["stop"], 1)
            else:
                text, completed, seqs, _ = responses(default.url, prompt, model=CLAUDE_INSTRUCTED,
                                                     temperature=1.0)
                assert seqs == list(range(len(seqs))) and completed.output_text == text
        except (openai.APIError, anthropic.APIError) as e:
            assert "bedrock-relay" in str(e), e
            continue
        log = attempts(sim, tag)
        assert len(log) == 2 and log[1]["continuation"], tag
        assert text == log[-1]["intended"], tag
        healed += 1
    assert healed >= 5, f"healed {healed} of 6"


def test_a_sampled_chat_completion_heals_coherently(relays):
    sim, _, heal, _, _, _ = relays
    tag = "heal-chat-sampled"
    cut(sim, tag, "reset")
    text, finishes, roles, _ = chat(heal.url, f"Write about ferns sim:len=20 sim:tag={tag}", temperature=1.0)
    log = attempts(sim, tag)
    delivered = log[1]["prefill"]
    assert delivered and text.startswith(delivered.strip()) and len(text) > len(delivered) + 10
    assert (finishes, roles) == (["stop"], 1)


@pytest.mark.parametrize("fault", ["reset", "stall", "exception"])
def test_a_cut_response_heals_whole_and_once(relays, fault):
    sim, clean, heal, _, _, _ = relays
    tag = f"heal-resp-{fault}"
    prompt = f"Write about kites sim:len=20 sim:tag={tag}"
    want, want_done, _, _ = responses(clean.url, prompt)
    cut(sim, tag, fault)
    text, completed, seqs, types = responses(heal.url, prompt)
    assert text == want and completed.output_text == want
    assert seqs == list(range(len(seqs))), "continuous sequence numbers"
    assert types.count("response.completed") == 1 and types.count("response.created") == 1
    assert types.count("response.output_item.added") == 1
    assert completed.usage.input_tokens > want_done.usage.input_tokens
    assert attempts(sim, tag)[1]["prefill"]


@pytest.mark.parametrize("model,strategy", [(CLAUDE_PREFILL, "prefill"), (CLAUDE_INSTRUCTED, "instructed")])
@pytest.mark.parametrize("fault", ["reset", "truncate", "exception"])
def test_a_cut_messages_stream_heals_whole_and_once(relays, model, strategy, fault):
    sim, clean, heal, _, _, _ = relays
    tag = f"heal-msg-{strategy}-{fault}"
    prompt = f"Write about owls sim:len=20 sim:tag={tag}"
    want, _ = messages(clean.url, model, prompt)
    cut(sim, tag, fault)
    final, events = messages(heal.url, model, prompt)
    assert [b.text for b in final.content] == [want.content[0].text]
    assert final.stop_reason == "end_turn"
    assert events.count("message_start") == 1 and events.count("message_stop") == 1
    log = attempts(sim, tag)
    assert len(log) == 2 and (log[1]["prefill"] is not None or log[1]["continuation"])


def test_where_healing_is_impossible_the_sdk_raises_the_apis_error(relays):
    sim, clean, _, default, never, _ = relays
    # max_resumes = 0.
    tag = "heal-never"
    cut(sim, tag, "reset")
    with pytest.raises(openai.APIError) as err:
        chat(never.url, f"Write about ferns sim:len=20 sim:tag={tag}")
    assert "bedrock-relay" in str(err.value) and "max_resumes" in str(err.value)
    tag = "heal-never-resp"
    cut(sim, tag, "reset")
    with pytest.raises(openai.APIError) as err:
        responses(never.url, f"Write about kites sim:len=20 sim:tag={tag}")
    assert "bedrock-relay" in str(err.value)
    # Only replay, and the answer is sampled: the replay differs from what the client has.
    tag = "heal-sampled-replay"
    cut(sim, tag, "reset")
    with pytest.raises(openai.APIError) as err:
        chat(default.url, f"Write about ferns sim:len=20 sim:tag={tag}", temperature=1.0)
    assert "diverged" in str(err.value)


WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}}


def test_a_chat_completion_cut_inside_a_tool_call_brings_the_call_whole_once(relays):
    """role + 8 text deltas + the call's start + 1 argument piece, then the cut: the partial
    call is held back, the continuation brings it again, whole, with valid arguments."""
    sim, clean, heal, _, _, _ = relays
    tag = "heal-chat-tool"
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    text, calls, finishes = "", {}, []
    add_faults(sim.url, [{"kind": "reset_after_events", "events": 11, "tag": tag, "attempts": [1]}])
    stream = oai(heal.url).chat.completions.create(
        model=GPT, stream=True, tools=tools,
        messages=[{"role": "user", "content": f"Weather in Lima sim:len=8 sim:tag={tag}"}])
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                c = calls.setdefault(call.index, {"id": None, "name": None, "args": ""})
                c["id"] = c["id"] or call.id
                c["name"] = c["name"] or (call.function.name if call.function else None)
                c["args"] += (call.function.arguments or "") if call.function else ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert list(calls) == [0] and calls[0]["id"] and calls[0]["name"] == "get_weather"
    assert set(json.loads(calls[0]["args"])) == {"city"}
    assert finishes == ["tool_calls"] and len(text.split()) == 8
    assert len(attempts(sim, tag)) == 2


def test_a_messages_stream_cut_inside_a_tool_use_block_brings_it_whole_once(relays):
    sim, clean, heal, _, _, _ = relays
    tag = "heal-msg-tool"
    tools = [{"name": "get_weather", "input_schema": WEATHER}]
    prompt = f"Weather in Lima sim:len=8 sim:tag={tag}"
    add_faults(sim.url, [{"kind": "reset_after_events", "events": 13, "tag": tag, "attempts": [1]}])
    final, events = messages(heal.url, CLAUDE_PREFILL, prompt, tools=tools)
    kinds = [b.type for b in final.content]
    assert kinds == ["text", "tool_use"] and final.stop_reason == "tool_use"
    assert set(final.content[1].input) == {"city"}
    assert events.count("message_start") == 1 and len(attempts(sim, tag)) == 2


def test_a_response_cut_inside_a_function_call_brings_it_whole_once(relays):
    sim, clean, heal, _, _, _ = relays
    tag = "heal-resp-tool"
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER}]
    add_faults(sim.url, [{"kind": "reset_after_events", "events": 17, "tag": tag, "attempts": [1]}])
    text, completed, seqs, types = responses(heal.url, f"Weather in Lima sim:len=8 sim:tag={tag}",
                                             tools=tools)
    assert seqs == list(range(len(seqs)))
    calls = [o for o in completed.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert set(json.loads(calls[0].arguments)) == {"city"}
    assert types.count("response.output_item.added") == 2 and len(attempts(sim, tag)) == 2
    assert completed.output_text == text and len(text.split()) == 8
