"""The continuation protocol (docs/continuation.md) end to end, seeded and in bulk.

A relay subprocess in front of a simulator of its own; the simulator's first attempt of each
conversation is cut (a fault rule by tag), the relay continues by instruction, and the
simulator dresses its continuation reply in a phrasing class (`sim:phrase=CLASS` forces the
class of the first continuation reply; re-asks draw from the default mix). Each stream ends in
one of three outcomes:

* **healed**: no error, the text is exactly the answer the model meant (the simulator's log:
  the last attempt's `intended`), one message start, one normal stop, usage present;
* **typed**: the SDK raised the modelled error (botocore `ClientError`/`EventStreamError`,
  `anthropic.APIStatusError`) and the text so far is a prefix of the answer meant;
* **corrupt**: anything else — never allowed.

Three client surfaces: boto3 `converse_stream`, boto3 `invoke_model_with_response_stream` with
a Claude messages body, and the Anthropic SDK's `AnthropicBedrock.messages.stream`.
Where a cut must fall exactly (after the last text delta, or at a fraction of the answer) the
event index comes from the answer a clean simulator gives the same conversation (its first
attempt is the same first sample the relay's upstream gives).
"""
import json
import os
import random
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from conftest import BIN, CLIENT_KEY, CLIENT_SECRET, RELAY_KEY, RELAY_SECRET, clean_env, free_port, start_sim, \
    wait_for

# ---------------------------------------------------------------------------------------------
# Classes of continuation replies (the simulator's `phrasing`).

NOT_COMPLETE = ["anchor", "echo-words", "echo-sentence", "echo-two-sentences", "recapitalised", "punctuation",
                "ellipsis", "whitespace", "opener", "quoted-opener", "restart", "near-restart", "fence", "list"]
COMPLETE = ["complete-marker", "complete-opener", "complete-anchor", "complete-anchor-marker", "complete-empty"]
BROKEN = ["broken-clean", "broken-short-echo", "broken-preamble", "broken-done-sentence"]
CLASSES = NOT_COMPLETE + COMPLETE + BROKEN
# Classes whose reply means "the delivered text was already the whole answer": the cut falls after
# the last text delta, before the stop.
CUT_AFTER_LAST = set(COMPLETE) | {"broken-done-sentence"}

# Models that take no prefill and sample at temperature 1 (continued by instruction).
MODELS = ["us.anthropic.claude-sonnet-4-6-v1:0", "global.anthropic.claude-opus-5-v1:0",
          "anthropic.claude-sonnet-4-6-v1:0", "eu.anthropic.claude-opus-4-7-v1:0"]
# Bare ids: CountTokens is served for them.
BARE = ["anthropic.claude-sonnet-4-6-v1:0", "anthropic.claude-opus-5-v1:0"]
FAULTS = [("reset_after_events", {}), ("reset_mid_frame", {}), ("eof_no_terminator", {}), ("truncate", {}),
          ("corrupt_crc", {}), ("exception", {"type": "serviceUnavailableException"}),
          ("exception", {"type": "internalServerException"}), ("exception", {"type": "throttlingException"})]
SURFACES = ["converse", "invoke", "anthropic"]
STREAM_OPS = {"ConverseStream", "InvokeModelWithResponseStream"}
OP_OF = {"converse": "ConverseStream", "invoke": "InvokeModelWithResponseStream",
         "anthropic": "InvokeModelWithResponseStream"}


# ---------------------------------------------------------------------------------------------
# A simulator and a relay of this module's own (a large log, a retry budget for thousands of
# streams, rules and log cleared between batches).

@pytest.fixture(scope="module")
def psim():
    proc = start_sim("--access-key-id", RELAY_KEY, "--secret-access-key", RELAY_SECRET,
                     "--log-capacity", "200000")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def pclean():
    proc = start_sim("--log-capacity", "100")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def prelay(psim):
    port, admin = free_port(), free_port()
    log = tempfile.NamedTemporaryFile(prefix="relay-protocol-", suffix=".log", delete=False)
    env = clean_env(AWS_ACCESS_KEY_ID=RELAY_KEY, AWS_SECRET_ACCESS_KEY=RELAY_SECRET, AWS_REGION="us-east-1",
                    BEDROCK_RELAY_BACKOFF_BASE="1ms", BEDROCK_RELAY_BACKOFF_MAX="5ms",
                    BEDROCK_RELAY_RETRY_BUDGET="10000000")
    args = ["serve", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
            "--upstream", psim.url]
    p = subprocess.Popen([BIN, *args], env=env, stdout=subprocess.DEVNULL, stderr=log)
    wait_for(f"http://127.0.0.1:{admin}/healthz")
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}", log_path=log.name)
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
    log.close()
    os.unlink(log.name)


def _http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


def add_rules(sim_url, rules):
    _http("POST", sim_url + "/_sim/faults", rules)


def set_controls(sim_url, **controls):
    """The simulator's run-time controls (`deny_count_tokens`: CountTokens answers 403)."""
    return _http("POST", sim_url + "/_sim/controls", controls)


def reset_sim(sim_url):
    _http("DELETE", sim_url + "/_sim/faults")
    _http("DELETE", sim_url + "/_sim/log")


def log_by_tag(sim_url):
    out = defaultdict(list)
    for e in _http("GET", sim_url + "/_sim/log"):
        if e.get("tag"):
            out[e["tag"]].append(e)
    for v in out.values():
        v.sort(key=lambda e: e["seq"])
    return out


# ---------------------------------------------------------------------------------------------
# Clients, one set per thread.

_local = threading.local()


def _boto(url):
    session = boto3.session.Session()
    return session.client("bedrock-runtime", region_name="us-east-1", endpoint_url=url,
                          aws_access_key_id=CLIENT_KEY, aws_secret_access_key=CLIENT_SECRET,
                          config=Config(retries={"total_max_attempts": 1}, read_timeout=60, connect_timeout=10,
                                        max_pool_connections=16))


def clients(relay_url, clean_url):
    key = (relay_url, clean_url)
    cache = getattr(_local, "clients", None)
    if cache is None:
        cache = _local.clients = {}
    if key not in cache:
        from anthropic import AnthropicBedrock

        cache[key] = SimpleNamespace(
            relay=_boto(relay_url), clean=_boto(clean_url),
            anthropic=AnthropicBedrock(base_url=relay_url, aws_region="us-east-1", aws_access_key=CLIENT_KEY,
                                       aws_secret_key=CLIENT_SECRET, max_retries=0, timeout=60.0))
    return cache[key]


# ---------------------------------------------------------------------------------------------
# One stream on each surface: text, message starts, stop reasons, message ends, usage, error.

def new_result():
    return SimpleNamespace(text="", starts=0, stops=[], ends=0, usage=[], metrics=[], kinds=[], error=None,
                           typed=False, text_indexes=set())


def stream_converse(c, model, prompt, max_tokens=None, thinking=None):
    r = new_result()
    kw = {}
    if max_tokens:
        kw["inferenceConfig"] = {"maxTokens": max_tokens}
    if thinking:
        kw["additionalModelRequestFields"] = {"thinking": {"type": "enabled", "budget_tokens": thinking}}
    try:
        out = c.converse_stream(modelId=model, messages=[{"role": "user", "content": [{"text": prompt}]}], **kw)
        for ev in out["stream"]:
            (kind, body), = ev.items()
            r.kinds.append(kind)
            if kind == "messageStart":
                r.starts += 1
            elif kind == "contentBlockDelta" and "text" in body["delta"]:
                r.text += body["delta"]["text"]
                r.text_indexes.add(body["contentBlockIndex"])
            elif kind == "messageStop":
                r.stops.append(body["stopReason"])
            elif kind == "metadata":
                r.ends += 1
                r.usage.append(body["usage"]["outputTokens"])
    except botocore.exceptions.ClientError as e:  # EventStreamError included: the modelled errors
        r.error, r.typed = e, True
    except Exception as e:  # noqa: BLE001 - anything else is a corrupt outcome
        r.error = e
    return r


def claude_body(prompt, max_tokens=None, thinking=None):
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": max_tokens or 4096,
            "messages": [{"role": "user", "content": prompt}]}
    if thinking:
        body["thinking"] = {"type": "enabled", "budget_tokens": thinking}
    return body


def stream_invoke(c, model, prompt, max_tokens=None, thinking=None):
    r = new_result()
    try:
        out = c.invoke_model_with_response_stream(modelId=model,
                                                  body=json.dumps(claude_body(prompt, max_tokens, thinking)))
        for ev in out["body"]:
            if "chunk" not in ev:
                r.kinds.append(next(iter(ev)))
                continue
            e = json.loads(ev["chunk"]["bytes"])
            t = e.get("type")
            r.kinds.append(t)
            if t == "message_start":
                r.starts += 1
            elif t == "content_block_delta" and e["delta"].get("type") == "text_delta":
                r.text += e["delta"]["text"]
                r.text_indexes.add(e["index"])
            elif t == "message_delta":
                r.stops.append(e["delta"].get("stop_reason"))
                if "usage" in e and "output_tokens" in e["usage"]:
                    r.usage.append(e["usage"]["output_tokens"])
            elif t == "message_stop":
                r.ends += 1
                m = e.get("amazon-bedrock-invocationMetrics")
                if m:
                    r.metrics.append(m.get("outputTokenCount"))
    except botocore.exceptions.ClientError as e:
        r.error, r.typed = e, True
    except Exception as e:  # noqa: BLE001
        r.error = e
    return r


def stream_anthropic(a, model, prompt, max_tokens=None, thinking=None):
    import anthropic

    r = new_result()
    kw = {}
    if thinking:
        kw["thinking"] = {"type": "enabled", "budget_tokens": thinking}
    try:
        with a.messages.stream(model=model, max_tokens=max_tokens or 4096,
                               messages=[{"role": "user", "content": prompt}], **kw) as s:
            for ev in s:
                t = ev.type
                if t in ("message_start", "message_delta", "message_stop", "content_block_delta"):
                    r.kinds.append(t)
                if t == "message_start":
                    r.starts += 1
                elif t == "content_block_delta" and ev.delta.type == "text_delta":
                    r.text += ev.delta.text
                    r.text_indexes.add(ev.index)
                elif t == "message_delta":
                    r.stops.append(ev.delta.stop_reason)
                    if ev.usage is not None and ev.usage.output_tokens is not None:
                        r.usage.append(ev.usage.output_tokens)
                elif t == "message_stop":
                    r.ends += 1
            final = s.get_final_message()
            if "".join(b.text for b in final.content if b.type == "text") != r.text:
                raise AssertionError("the SDK's final message differs from its text deltas")
    except anthropic.APIStatusError as e:  # an HTTP error or an in-stream `error` event
        r.error, r.typed = e, True
    except Exception as e:  # noqa: BLE001 - connection errors, decoding errors: not modelled
        r.error = e
    return r


def run_surface(cs, surface, model, prompt, max_tokens=None, thinking=None):
    if surface == "converse":
        return stream_converse(cs.relay, model, prompt, max_tokens, thinking)
    if surface == "invoke":
        return stream_invoke(cs.relay, model, prompt, max_tokens, thinking)
    return stream_anthropic(cs.anthropic, model, prompt, max_tokens, thinking)


def clean_layout(cs, surface, model, prompt, max_tokens=None, thinking=None):
    """The clean simulator's stream of the same conversation: its text, and for each text delta
    the number of frames up to and including it (a fault with `events` = that number cuts the
    stream right after that delta)."""
    ends, text = [], ""
    if surface == "converse":
        kw = {}
        if max_tokens:
            kw["inferenceConfig"] = {"maxTokens": max_tokens}
        if thinking:
            kw["additionalModelRequestFields"] = {"thinking": {"type": "enabled", "budget_tokens": thinking}}
        out = cs.clean.converse_stream(modelId=model, messages=[{"role": "user", "content": [{"text": prompt}]}],
                                       **kw)
        for i, ev in enumerate(out["stream"]):
            (kind, body), = ev.items()
            if kind == "contentBlockDelta" and "text" in body["delta"]:
                text += body["delta"]["text"]
                ends.append(i + 1)
    else:
        out = cs.clean.invoke_model_with_response_stream(
            modelId=model, body=json.dumps(claude_body(prompt, max_tokens, thinking)))
        for i, ev in enumerate(out["body"]):
            e = json.loads(ev["chunk"]["bytes"])
            if e.get("type") == "content_block_delta" and e["delta"].get("type") == "text_delta":
                text += e["delta"]["text"]
                ends.append(i + 1)
    return text, ends


def clean_pieces(cs, model, prompt):
    """Text and piece count (one piece = one output token) of the clean simulator's answer, from
    a cheap non-streaming Converse: the answer is the same on every surface (the seed is the
    model, the system text, the turns and the attempt)."""
    r = cs.clean.converse(modelId=model, messages=[{"role": "user", "content": [{"text": prompt}]}])
    text = "".join(b.get("text", "") for b in r["output"]["message"]["content"])
    return text, r["usage"]["outputTokens"]


def frames_before_text(surface):
    """Frames before the first text delta (no reasoning): messageStart; Claude: message_start and
    the text block's content_block_start."""
    return 1 if surface == "converse" else 2


# ---------------------------------------------------------------------------------------------
# Judging one stream.

def stream_attempts(entries):
    return [e for e in entries if e.get("operation") in STREAM_OPS]


def judge(r, attempts, expected_stop="end_turn", limit=None):
    """(outcome, reason). `attempts` are the simulator's stream attempts of the conversation."""
    meant = [a["intended"] for a in attempts if a.get("intended")]
    target = meant[-1] if meant else None
    over = limit is not None and any(u > limit for u in r.usage + [m for m in r.metrics if m is not None])
    if r.error is None:
        problems = []
        if target is None:
            problems.append("no intended answer in the log")
        elif r.text != target:
            problems.append("text differs from the intended answer")
        if r.starts != 1:
            problems.append(f"{r.starts} message starts")
        if r.stops != [expected_stop]:
            problems.append(f"stops {r.stops}")
        if r.ends != 1:
            problems.append(f"{r.ends} message ends")
        if not r.usage or min(r.usage) <= 0:
            problems.append(f"usage {r.usage}")
        if len(r.text_indexes) > 1:
            problems.append(f"text in blocks {sorted(r.text_indexes)}")
        if over:
            problems.append(f"usage {r.usage} {r.metrics} over the limit {limit}")
        return ("healed", "") if not problems else ("corrupt", "; ".join(problems))
    if r.typed and any(m.startswith(r.text) for m in meant) and not over and r.starts <= 1:
        return "typed", f"{type(r.error).__name__}: {str(r.error)[:160]}"
    why = "untyped error" if not r.typed else "text is no prefix of the answer" if not over else "over the limit"
    return "corrupt", f"{why}: {type(r.error).__name__}: {str(r.error)[:200]}"


def describe(case, r, attempts, reason):
    meant = [a["intended"] for a in attempts if a.get("intended")]
    return {
        **case, "reason": reason, "got": r.text, "intended": meant[-1] if meant else None,
        "stops": r.stops, "starts": r.starts, "ends": r.ends, "usage": r.usage,
        "error": None if r.error is None else f"{type(r.error).__name__}: {r.error}",
        "attempts": [{k: a.get(k) for k in ("attempt", "operation", "continuation", "phrasing", "fault", "status",
                                           "output_tokens")} for a in attempts],
    }


def short_error(error):
    """The relay's reason in a typed error, without the SDK's wrapping."""
    if not error:
        return ""
    for mark in ("could not resume it: ", "operation: "):
        if mark in error:
            error = error.split(mark, 1)[1]
            break
    return error if len(error) <= 240 else f"{error[:60]} … {error[-170:]}"


def one_line(b):
    keys = [k for k in ("tag", "class", "surface", "model", "frac", "max_tokens", "budget", "fault", "k", "n")
            if k in b]
    return " ".join(f"{k}={b[k]}" for k in keys) + f" | {b['reason'][:60]} | {short_error(b['error'])} | " + \
        str([(a["attempt"], a["phrasing"], a["status"]) for a in b["attempts"]])


def first_phrasing(attempts):
    for a in attempts:
        if a.get("continuation"):
            return a.get("phrasing")
    return None


def show_failures(bad, n=4):
    for b in bad[:n]:
        print("FAILED CASE:", json.dumps(b, indent=1, default=str)[:4000])


# ---------------------------------------------------------------------------------------------
# 1. Every phrasing class, three surfaces, thousands of streams.

STREAMS = int(os.environ.get("CONTINUATION_PROTOCOL_STREAMS", 23 * 220))  # 5,060: 220 per class
BATCH = 23 * 10


def test_generated_phrasings_heal_or_fail_typed(psim, pclean, prelay):
    rng = random.Random(20240613)
    cases = []
    for i in range(STREAMS):
        cls = CLASSES[i % len(CLASSES)]
        surface = SURFACES[i % len(SURFACES)]
        kind, extra = FAULTS[rng.randrange(len(FAULTS))]
        cases.append({"i": i, "tag": f"cpg{i:05d}", "class": cls, "surface": surface,
                      "model": MODELS[rng.randrange(len(MODELS))],
                      "len": (60 if cls == "near-restart" else 20) + rng.randrange(101 - (40 if cls == "near-restart" else 0)),
                      "fault": extra.get("type", kind), "kind": kind, "extra": extra, "u": rng.random()})

    def one(case):
        cs = clients(prelay.url, pclean.url)
        prompt = (f"Tell me about tidal estuaries, case {case['i']} sim:len={case['len']} "
                  f"sim:phrase={case['class']} sim:tag={case['tag']}")
        clean_text, n = clean_pieces(cs, case["model"], prompt)
        if case["class"] in CUT_AFTER_LAST:
            k = n
        else:
            # Inside the text, late enough for an anchor (and, for a near restart, for words to
            # change between the first 32 letters and the anchor).
            lo = min(30 if case["class"] == "near-restart" else 12, n - 1)
            k = lo + int(case["u"] * (n - lo))  # lo <= k <= n-1
        events = frames_before_text(case["surface"]) + k
        case.update(n=n, k=k, events=events, clean=clean_text)
        add_rules(psim.url, [{"tag": case["tag"], "operation": OP_OF[case["surface"]], "attempts": [1],
                              "kind": case["kind"], "events": events, **case["extra"]}])
        return run_surface(cs, case["surface"], case["model"], prompt)

    table = {c: Counter() for c in CLASSES}
    by_surface = {s: Counter() for s in SURFACES}
    exercised, bad, typed_cases, setup = Counter(), [], [], []
    t0 = time.time()
    reset_sim(psim.url)
    with ThreadPoolExecutor(16) as pool:
        for start in range(0, STREAMS, BATCH):
            batch = cases[start:start + BATCH]
            results = list(pool.map(one, batch))
            logs = log_by_tag(psim.url)
            reset_sim(psim.url)
            for case, r in zip(batch, results):
                attempts = stream_attempts(logs.get(case["tag"], []))
                if not attempts or attempts[0].get("intended") != case["clean"]:
                    setup.append({k: case[k] for k in ("tag", "class", "surface", "model")})
                outcome, reason = judge(r, attempts)
                table[case["class"]][outcome] += 1
                by_surface[case["surface"]][outcome] += 1
                if first_phrasing(attempts) == case["class"]:
                    exercised[case["class"]] += 1
                if outcome == "corrupt":
                    bad.append(describe({k: case[k] for k in ("i", "tag", "class", "surface", "model", "fault", "n",
                                                              "k", "events")}, r, attempts, reason))
                elif outcome == "typed":
                    typed_cases.append(describe({k: case[k] for k in ("tag", "class", "surface", "model", "fault",
                                                                      "n", "k")}, r, attempts, reason))
    elapsed = time.time() - t0

    print(f"\n{STREAMS} streams in {elapsed:.0f}s (seed 20240613); first continuation reply by class")
    print(f"  {'class':<24} {'healed':>6} {'typed':>6} {'corrupt':>7} {'healed%':>8} {'phrased':>8}")
    for c in CLASSES:
        row = table[c]
        total = sum(row.values())
        print(f"  {c:<24} {row['healed']:>6} {row['typed']:>6} {row['corrupt']:>7} "
              f"{100 * row['healed'] / max(total, 1):>7.1f}% {exercised[c]:>8}")
    for s in SURFACES:
        row = by_surface[s]
        print(f"  surface {s:<16} {row['healed']:>6} {row['typed']:>6} {row['corrupt']:>7}")
    why = Counter((t["surface"], short_error(t["error"])) for t in typed_cases)
    for (surface, e), n in why.most_common(12):
        print(f"  typed x{n} on {surface}: {e}")
    for t in typed_cases[:40]:
        print("  typed:", t["tag"], t["class"], t["surface"], t["model"], t["fault"], f"k={t['k']}/{t['n']}",
              t["reason"][:120], [(a["attempt"], a["phrasing"], a["fault"]) for a in t["attempts"]])
    show_failures(bad)
    assert not setup, f"{len(setup)} cases where the relay's first attempt is not the clean answer: {setup[:5]}"
    assert not bad, f"{len(bad)} corrupt streams, first: {bad[:2]}"
    for c in CLASSES:
        total = sum(table[c].values())
        assert exercised[c] >= 150, f"{c}: only {exercised[c]} first continuation replies carried the class"
        assert table[c]["healed"] >= 0.99 * total, f"{c}: {dict(table[c])}"


# ---------------------------------------------------------------------------------------------
# 2. A cut between the last words and the stop: nothing may be added.

def test_cut_between_last_words_and_stop(psim, pclean, prelay):
    rng = random.Random(77)
    cases = []
    for i, (surface, model, (kind, extra)) in enumerate(
            (s, m, f) for s in SURFACES for m in MODELS for f in FAULTS for _ in range(2)):
        cases.append({"tag": f"cpl{i:04d}", "surface": surface, "model": model, "kind": kind, "extra": extra,
                      "fault": extra.get("type", kind), "len": 20 + rng.randrange(100)})

    def one(case):
        cs = clients(prelay.url, pclean.url)
        prompt = f"Describe salt marshes, case {case['tag']} sim:len={case['len']} sim:tag={case['tag']}"
        clean_text, ends = clean_layout(cs, case["surface"], case["model"], prompt)
        case.update(clean=clean_text, events=ends[-1])
        add_rules(psim.url, [{"tag": case["tag"], "operation": OP_OF[case["surface"]], "attempts": [1],
                              "kind": case["kind"], "events": ends[-1], **case["extra"]}])
        return run_surface(cs, case["surface"], case["model"], prompt)

    reset_sim(psim.url)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, cases))
    logs = log_by_tag(psim.url)
    reset_sim(psim.url)
    table, bad, phrasings = defaultdict(Counter), [], Counter()
    for case, r in zip(cases, results):
        attempts = stream_attempts(logs.get(case["tag"], []))
        outcome, reason = judge(r, attempts)
        # The whole answer was delivered before the cut: the client ends with exactly it.
        if outcome == "healed" and r.text != case["clean"]:
            outcome, reason = "corrupt", "healed text is not the delivered answer"
        if outcome == "typed" and not case["clean"].startswith(r.text):
            outcome, reason = "corrupt", "typed, but text beyond the answer"
        phrasings[first_phrasing(attempts)] += 1
        table[case["surface"]][outcome] += 1
        if outcome == "corrupt":
            bad.append(describe({k: case[k] for k in ("tag", "surface", "model", "fault", "events")}, r, attempts,
                                reason))
    print(f"\ncut after the last text delta, {len(cases)} streams: surface, healed, typed, corrupt")
    for s in SURFACES:
        print(f"  {s:<10} {table[s]['healed']:>4} {table[s]['typed']:>4} {table[s]['corrupt']:>4}")
    print("  first continuation phrasings:", dict(phrasings))
    why = Counter((case["surface"], short_error(str(r.error)) if r.error else "") for case, r in zip(cases, results)
                  if r.error is not None)
    for (surface, e), n in why.most_common(8):
        print(f"  typed x{n} on {surface}: {e}")
    show_failures(bad)
    assert not bad, f"{len(bad)} corrupt: {bad[:2]}"


# ---------------------------------------------------------------------------------------------
# 3. Long answers cut late under a tight client limit.

LIMIT = 340


def pick_answer(cs, case, base, max_tokens=None, thinking=None, lo=280, hi=320):
    """A conversation (sim:len=270) whose clean answer has lo..hi text tokens: under the limit and
    close to it. Each try is a conversation of its own (the tag is part of the first user message),
    and its clean stream is the clean simulator's first attempt of it, the same first sample the
    relay's upstream gives. Sets the case's tag; returns the prompt, the clean text and the frame
    count after each text delta."""
    for j in range(40):
        tag = f"{case['tag']}-{j}"
        prompt = f"{base} v{j} sim:len=270 sim:tag={tag}"
        text, ends = clean_layout(cs, case["surface"], case["model"], prompt, max_tokens, thinking)
        if lo <= len(ends) <= hi:
            case["tag"] = tag
            return prompt, text, ends
    raise AssertionError(f"no answer of {lo}..{hi} tokens for {case}")


def limit_cases(models, prefix, rng):
    cases = []
    fracs = [f / 10 for f in range(1, 10)]
    i = 0
    for surface in SURFACES:
        for model in models:
            for frac in fracs:
                for _ in range(2):
                    kind, extra = FAULTS[rng.randrange(len(FAULTS))]
                    cases.append({"tag": f"{prefix}{i:04d}", "surface": surface, "model": model, "frac": frac,
                                  "kind": kind, "extra": extra, "fault": extra.get("type", kind)})
                    i += 1
    return cases


def run_limit_cases(psim, pclean, prelay, cases, deny_count=False):
    def one(case):
        cs = clients(prelay.url, pclean.url)
        prompt, clean_text, ends = pick_answer(cs, case, f"Explain river deltas in depth, case {case['tag']}",
                                               max_tokens=LIMIT)
        k = max(1, min(len(ends) - 1, round(case["frac"] * len(ends))))
        case.update(clean=clean_text, n=len(ends), k=k, events=ends[k - 1])
        rules = [{"tag": case["tag"], "operation": OP_OF[case["surface"]], "attempts": [1], "kind": case["kind"],
                  "events": ends[k - 1], **case["extra"]}]
        add_rules(psim.url, rules)
        return run_surface(cs, case["surface"], case["model"], prompt, max_tokens=LIMIT)

    reset_sim(psim.url)
    if deny_count:
        set_controls(psim.url, deny_count_tokens=True)
    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, cases))
    finally:
        if deny_count:
            set_controls(psim.url, deny_count_tokens=False)
    logs = log_by_tag(psim.url)
    reset_sim(psim.url)
    out = []
    for case, r in zip(cases, results):
        entries = logs.get(case["tag"], [])
        attempts = stream_attempts(entries)
        outcome, reason = judge(r, attempts, limit=LIMIT)
        if outcome == "healed" and r.text != case["clean"]:
            outcome, reason = "corrupt", "healed text is not the clean answer"
        counts = [e for e in entries if e.get("operation") == "CountTokens"]
        out.append((case, r, attempts, outcome, reason, counts))
    return out


def print_limit_table(title, out):
    print(f"\n{title}")
    print(f"  {'surface':<10} {'model':<36} {'healed':>6} {'typed':>6} {'corrupt':>7} {'max_tok':>7} "
          f"{'usage max':>9} {'usage mean':>10}  CountTokens status x n")
    groups = defaultdict(list)
    for row in out:
        groups[(row[0]["surface"], row[0]["model"])].append(row)
    for (surface, model), rows in sorted(groups.items()):
        c = Counter(r[3] for r in rows)
        usage = [max(r[1].usage) for r in rows if r[1].usage]
        max_stops = sum(1 for r in rows if "max_tokens" in r[1].stops)
        counted = Counter(e.get("status") for r in rows for e in r[5])
        counted = " ".join(f"{k}x{v}" for k, v in sorted(counted.items())) or "-"
        print(f"  {surface:<10} {model:<36} {c['healed']:>6} {c['typed']:>6} {c['corrupt']:>7} {max_stops:>7} "
              f"{max(usage, default=0):>5}/{LIMIT} {sum(usage) / max(len(usage), 1):>10.1f}  {counted}")
    print("  by cut fraction (healed/total):", {f: f"{sum(1 for r in out if r[0]['frac'] == f and r[3] == 'healed')}"
                                              f"/{sum(1 for r in out if r[0]['frac'] == f)}"
                                              for f in sorted({r[0]['frac'] for r in out})})


def limit_failures(out):
    """Every stream that did not heal, with what it got."""
    return [describe({k: case[k] for k in ("tag", "surface", "model", "frac", "fault", "n", "k", "events")},
                     r, attempts, f"{outcome}: {reason}")
            for case, r, attempts, outcome, reason, _ in out if outcome != "healed"]


def test_long_answers_cut_late_under_a_tight_limit(psim, pclean, prelay):
    rng = random.Random(340)
    exact = run_limit_cases(psim, pclean, prelay, limit_cases(BARE, "cpx", rng))
    print_limit_table(f"~300-token answers, limit {LIMIT}, bare ids (CountTokens served), cut at 10%..90%", exact)
    refused = run_limit_cases(psim, pclean, prelay, limit_cases(["us.anthropic.claude-sonnet-4-6-v1:0"], "cpr", rng))
    print_limit_table("the same, profile id (Bedrock refuses CountTokens on profiles: 400, unless the relay counts "
                      "with the bare id; see the CountTokens column)", refused)
    denied = run_limit_cases(psim, pclean, prelay, limit_cases(["anthropic.claude-sonnet-4-6-v1:0"], "cpd", rng),
                             deny_count=True)
    print_limit_table("the same, bare id, CountTokens denied 403 (the simulator's deny_count_tokens control)", denied)

    not_healed = limit_failures(exact)
    healed = len(exact) - len(not_healed)
    others = limit_failures(refused + denied)
    show_failures([b for b in not_healed + others if b["reason"].startswith("corrupt")], 6)
    for b in (not_healed + others)[:12]:
        print("  not healed:", one_line(b))
    why = Counter((b["surface"], short_error(b["error"])) for b in not_healed + others)
    for (surface, e), n in why.most_common(8):
        print(f"  not healed x{n} on {surface}: {e}")
    # Healed and typed streams never stop at max_tokens nor report more than the limit (judge()
    # counts those as corrupt), and nothing is corrupt.
    corrupt = [b for b in not_healed + others if b["reason"].startswith("corrupt")]
    assert not corrupt, corrupt[:2]
    assert healed >= 0.99 * len(exact), f"healed {healed}/{len(exact)}; not healed: {not_healed[:3]}"


# ---------------------------------------------------------------------------------------------
# 4. Extended thinking: the continuation keeps max_tokens above the thinking budget.

def test_late_cuts_with_extended_thinking_near_the_budget(psim, pclean, prelay):
    rng = random.Random(1024)
    cases = []
    i = 0
    for max_tokens, budget in [(2048, 1024), (4096, 3000), (3000, 2000)]:
        for surface in ("converse", "invoke"):
            for model in ("anthropic.claude-sonnet-4-6-v1:0", "us.anthropic.claude-opus-4-7-v1:0"):
                for frac in (0.6, 0.75, 0.9, 1.0):
                    kind, extra = FAULTS[rng.randrange(len(FAULTS))]
                    cases.append({"tag": f"cpt{i:04d}", "surface": surface, "model": model, "frac": frac,
                                  "max_tokens": max_tokens, "budget": budget, "kind": kind, "extra": extra,
                                  "fault": extra.get("type", kind)})
                    i += 1

    def one(case):
        cs = clients(prelay.url, pclean.url)
        prompt, clean_text, ends = pick_answer(cs, case, f"Reason about tide tables, case {case['tag']}",
                                               case["max_tokens"], case["budget"])
        k = max(1, min(len(ends), round(case["frac"] * len(ends))))
        case.update(clean=clean_text, n=len(ends), k=k, events=ends[k - 1])
        add_rules(psim.url, [{"tag": case["tag"], "operation": OP_OF[case["surface"]], "attempts": [1],
                              "kind": case["kind"], "events": ends[k - 1], **case["extra"]}])
        return run_surface(cs, case["surface"], case["model"], prompt, case["max_tokens"], case["budget"])

    reset_sim(psim.url)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, cases))
    logs = log_by_tag(psim.url)
    reset_sim(psim.url)
    table, bad, refusals = defaultdict(Counter), [], []
    for case, r in zip(cases, results):
        entries = logs.get(case["tag"], [])
        attempts = stream_attempts(entries)
        outcome, reason = judge(r, attempts, limit=case["max_tokens"])
        if outcome == "healed" and r.text != case["clean"]:
            outcome, reason = "corrupt", "healed text is not the clean answer"
        table[(case["surface"], case["max_tokens"], case["budget"])][outcome] += 1
        for e in entries:
            if e.get("status") == 400:
                refusals.append({"tag": case["tag"], "operation": e.get("operation"), "attempt": e.get("attempt"),
                                 "body": json.dumps(e.get("body"))[-600:]})
        if outcome != "healed":
            bad.append(describe({k: case[k] for k in ("tag", "surface", "model", "frac", "max_tokens", "budget",
                                                      "fault", "n", "k", "events")}, r, attempts, reason))
    print(f"\nextended thinking, ~300-token answers cut late, {len(cases)} streams")
    print(f"  {'surface':<10} {'max':>5} {'budget':>6} {'healed':>6} {'typed':>6} {'corrupt':>7}")
    for key, c in sorted(table.items()):
        print(f"  {key[0]:<10} {key[1]:>5} {key[2]:>6} {c['healed']:>6} {c['typed']:>6} {c['corrupt']:>7}")
    print(f"  requests the simulator refused (400): {len(refusals)}")
    for x in refusals[:5]:
        print("   ", x)
    for b in bad:
        print("  not healed:", one_line(b))
    show_failures(bad, 2)
    assert not refusals, refusals[:3]
    assert not bad, bad[:2]
