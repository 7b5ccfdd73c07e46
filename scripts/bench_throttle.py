#!/usr/bin/env python3
"""Throttling benchmark (`scripts/bench --throttle`): 64 boto3 clients in bursts of
ConverseStream calls against the simulator with an on-demand quota (Claude Sonnet 4.6,
burndown 5), in one run:

  relay        through the relay, clients with max_attempts 1 (defaults: admission on)
  relay-off    through the relay with --throttle-max-wait 0s (absorption off)
  standard     directly, the SDK's standard retry mode (3 attempts)
  adaptive     directly, the SDK's adaptive retry mode (client-side rate limiting)
  relay+spill  through the relay with one spillover region (the quota doubles)

For each: client-visible throttles, completion time, the quota's ideal (net tokens Bedrock
charged / the quota's rate, from the simulator's own accounting in the same run) and the
ratio, and (relay) the p95 of the wait in the relay's queue from its access log.
"""
import argparse, json, os, re, socket, subprocess, sys, tempfile, threading, time, urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

MODEL = "us.anthropic.claude-sonnet-4-6-v1:0"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_http(url, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"not up: {url}")


def http_json(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=5).read())


def run_clients(endpoint, region, retries, clients, rounds, max_tokens, length):
    made = [
        boto3.client(
            "bedrock-runtime", region_name=region, endpoint_url=endpoint,
            aws_access_key_id=f"AKIDCLIENT{i:04d}", aws_secret_access_key="x",
            config=Config(retries=retries, read_timeout=60, max_pool_connections=4),
        )
        for i in range(clients)
    ]
    throttled, failed, done = [0], [0], [0]
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def one(i):
        c = made[i]
        for r in range(rounds):
            barrier.wait()  # a burst: every client at once
            try:
                resp = c.converse_stream(
                    modelId=MODEL,
                    messages=[{"role": "user", "content": [{"text": f"client {i} round {r} sim:len={length}"}]}],
                    inferenceConfig={"maxTokens": max_tokens},
                )
                for _ in resp["stream"]:
                    pass
                with lock:
                    done[0] += 1
            except (ClientError, EventStreamError) as e:
                code = e.response.get("Error", {}).get("Code", "")
                with lock:
                    if "Throttl" in code or "throttl" in str(e):
                        throttled[0] += 1
                    else:
                        failed[0] += 1

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0, throttled[0], failed[0], done[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--relay-bin", default=os.environ.get("BENCH_RELAY_BIN", "target/release/bedrock-relay"))
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--tpm", type=int, default=4000, help="tokens per window, per region")
    ap.add_argument("--window", default="2s")
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--len", type=int, default=30, help="output tokens per answer")
    ap.add_argument("--inter-token", default="2ms")
    ap.add_argument("--only", default="", help="comma-separated run names")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    window = float(a.window.rstrip("s"))
    rate = a.tpm / window
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDRELAY", AWS_SECRET_ACCESS_KEY="x", AWS_REGION="us-east-1")
    env.pop("AWS_ENDPOINT_URL", None)
    procs = []
    sim_port = free_port()
    sim = subprocess.Popen([a.relay_bin, "sim", "--listen", f"127.0.0.1:{sim_port}", "--quota-tpm", str(a.tpm),
                            "--quota-window", a.window, "--inter-token", a.inter_token, "--log-capacity", "10"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(sim)
    sim_url = f"http://127.0.0.1:{sim_port}"
    wait_http(sim_url + "/_sim/health")

    def relay(extra):
        port, admin = free_port(), free_port()
        log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        p = subprocess.Popen([a.relay_bin, "serve", "--region", "us-east-1", "--upstream", sim_url,
                              "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
                              "--log-format", "json", *extra], env=env, stdout=log, stderr=log)
        procs.append(p)
        wait_http(f"http://127.0.0.1:{admin}/healthz")
        return p, f"http://127.0.0.1:{port}", log.name

    runs = [
        ("relay", "relay", [], {"total_max_attempts": 1}, 1),
        ("relay-off", "relay", ["--throttle-max-wait", "0s"], {"total_max_attempts": 1}, 1),
        ("standard", "direct", None, {"mode": "standard"}, 1),
        ("adaptive", "direct", None, {"mode": "adaptive"}, 1),
        ("relay+spill", "relay", ["--spillover-region", "us-west-2", "--region-upstream", f"us-west-2={sim_url}"],
         {"total_max_attempts": 1}, 2),
    ]
    only = set(filter(None, a.only.split(",")))
    rows = []
    try:
        for name, how, extra, retries, regions in runs:
            if only and name not in only:
                continue
            http_json("POST", sim_url + "/_sim/quota", {"tpm": a.tpm, "window": a.window})
            log = None
            if how == "relay":
                p, endpoint, log = relay(extra)
            else:
                endpoint = sim_url
            secs, thr, failed, done = run_clients(endpoint, "us-east-1", retries, a.clients, a.rounds, a.max_tokens, a.len)
            report = http_json("GET", sim_url + "/_sim/quota")
            charged = sum(q["charged_tokens"] for q in report["quotas"])
            sim_throttles = sum(q["throttled"] for q in report["quotas"])
            ideal = charged / (rate * regions)
            waits = []
            if log:
                p.terminate()
                p.wait()
                for line in open(log):
                    m = re.search(r'"waited_ms":\s*(\d+)', line)
                    if m and '"status":200' in line.replace(" ", "") or (m and "status" in line):
                        waits.append(int(m.group(1)))
            waits.sort()
            p95 = waits[int(0.95 * (len(waits) - 1))] / 1000 if waits else None
            rows.append(dict(run=name, requests=a.clients * a.rounds, ok=done, throttled=thr, failed=failed,
                             seconds=round(secs, 2), ideal=round(ideal, 2), ratio=round(secs / ideal, 2),
                             p95_wait=p95, upstream_throttles=sim_throttles, charged=charged))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        for p in procs:
            p.terminate()
    print()
    print(f"{a.clients} clients x {a.rounds} bursts, ConverseStream {MODEL} (burndown 5), maxTokens {a.max_tokens}, "
          f"~{a.len} output tokens; quota {a.tpm} tokens per {a.window} per region ({rate:.0f} tokens/s)")
    print("| run | requests | ok | client-visible throttles | time (s) | ideal (s) | time / ideal | p95 wait in relay (s) | 429s from the quota |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['requests']} | {r['ok']} | {r['throttled']} | {r['seconds']} | {r['ideal']} | {r['ratio']} | "
              f"{'-' if r['p95_wait'] is None else r['p95_wait']} | {r['upstream_throttles']} |")
    if a.out:
        json.dump(rows, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
