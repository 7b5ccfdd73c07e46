"""Throttle absorption through the relay, with boto3 clients (max_attempts 1): a burst of
ConverseStreams over the simulator's on-demand quota reaches the clients with zero
throttles, while the same burst sent directly, with the SDK's standard retries, is
throttled (the quota is real)."""
import json
import threading
import time
import urllib.request

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from conftest import RELAY_KEY, RELAY_SECRET, Proc, clean_env, client, free_port, start_sim, wait_for

MODEL = "us.anthropic.claude-sonnet-4-6-v1:0"  # burndown 5
CLIENTS, CALLS = 16, 2
MAX_TOKENS = 200  # reserves ~1000 tokens a call; ~120 after the refund at its end


@pytest.fixture
def quota_sim():
    # 1500 tokens a second per region × model; answers of ~20 tokens at 10 ms a token.
    proc = start_sim("--access-key-id", RELAY_KEY, "--secret-access-key", RELAY_SECRET,
                     "--quota-tpm", "1500", "--quota-window", "1s", "--inter-token", "10ms")
    yield proc
    proc.stop()


@pytest.fixture
def quota_relay(quota_sim):
    port, admin = free_port(), free_port()
    env = clean_env(
        AWS_ACCESS_KEY_ID=RELAY_KEY,
        AWS_SECRET_ACCESS_KEY=RELAY_SECRET,
        AWS_REGION="us-east-1",
        BEDROCK_RELAY_BACKOFF_BASE="1ms",
        BEDROCK_RELAY_BACKOFF_MAX="5ms",
    )
    proc = Proc(["serve", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
                 "--upstream", quota_sim.url, "--throttle-max-wait", "20s"], env, f"http://127.0.0.1:{port}")
    proc.admin = f"http://127.0.0.1:{admin}"
    wait_for(proc.admin + "/healthz")
    yield proc
    proc.stop()


def reset_quota(sim_url):
    """Every bucket full again and the counts restarted (`DELETE /_sim/quota`)."""
    urllib.request.urlopen(urllib.request.Request(sim_url + "/_sim/quota", method="DELETE")).read()


def sim_throttled(sim_url):
    report = json.loads(urllib.request.urlopen(sim_url + "/_sim/quota").read())
    return sum(q["throttled"] for q in report["quotas"]), sum(q["admitted"] for q in report["quotas"])


def burst(clients):
    """Every client makes CALLS ConverseStreams, all at once; counts how they ended."""
    out = {"ok": 0, "throttled": 0, "other": []}
    lock = threading.Lock()
    barrier = threading.Barrier(len(clients) * CALLS)

    def one(i, c, r):
        barrier.wait()
        try:
            resp = c.converse_stream(
                modelId=MODEL,
                messages=[{"role": "user", "content": [{"text": f"client {i} call {r} sim:len=20 sim:tag=pyburst"}]}],
                inferenceConfig={"maxTokens": MAX_TOKENS},
            )
            text = "".join(ev["contentBlockDelta"]["delta"].get("text", "") for ev in resp["stream"]
                           if "contentBlockDelta" in ev)
            assert text
            with lock:
                out["ok"] += 1
        except (botocore.exceptions.ClientError, botocore.exceptions.EventStreamError) as e:
            code = e.response.get("Error", {}).get("Code", "")
            with lock:
                if "Throttl" in code:
                    out["throttled"] += 1
                else:
                    out["other"].append(repr(e))

    threads = [threading.Thread(target=one, args=(i, c, r)) for i, c in enumerate(clients) for r in range(CALLS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    out["elapsed"] = time.monotonic() - t0
    return out


def test_a_burst_over_the_quota_reaches_no_client_as_a_throttle(quota_sim, quota_relay):
    # Through the relay: clients that never retry, each with its own identity.
    via = burst([client(quota_relay.url, key=f"AKIDCLIENT{i:04d}") for i in range(CLIENTS)])
    relay_throttled, admitted = sim_throttled(quota_sim.url)
    assert via["other"] == [], via
    assert via["throttled"] == 0, via
    assert via["ok"] == CLIENTS * CALLS, via
    assert admitted == CLIENTS * CALLS
    assert relay_throttled > 0, "the relay absorbed the simulator's throttles"
    assert via["elapsed"] < 20, via

    # Directly, with the SDK's standard retries (3 attempts): the quota throttles clients.
    reset_quota(quota_sim.url)
    direct = burst([
        boto3.client(
            "bedrock-runtime", region_name="us-east-1", endpoint_url=quota_sim.url,
            aws_access_key_id=RELAY_KEY, aws_secret_access_key=RELAY_SECRET,
            config=Config(retries={"mode": "standard", "max_attempts": 3}, read_timeout=30),
        )
        for _ in range(CLIENTS)
    ])
    assert direct["other"] == [], direct
    assert direct["throttled"] > 0, direct
    print(f"through the relay: {via}; directly: {direct}")
