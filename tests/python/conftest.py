"""Fixtures: the real `bedrock-relay` binary as simulator and relay, on loopback ports.

The relay signs with its own keys (RELAY_KEY); the simulator accepts only those; boto3
signs with other, dummy keys that Bedrock would reject.
"""
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("BEDROCK_RELAY_BIN", os.path.join(ROOT, "target", "debug", "bedrock-relay"))
RELAY_KEY, RELAY_SECRET = "AKIDRELAYEXAMPLE", "relay-secret-key-for-tests"
CLIENT_KEY, CLIENT_SECRET = "AKIDCLIENTEXAMPLE", "client-secret-that-bedrock-would-reject"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BEDROCK_RELAY_", "OTEL_"))}
    env.update(extra)
    return env


def wait_for(url, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


class Proc:
    """A relay or simulator process. Its log goes to a file (`log_path`), never to a pipe
    nobody reads: a full pipe would block the process once it has logged 64 KiB."""

    def __init__(self, args, env, url):
        self.url = url
        self.log = tempfile.NamedTemporaryFile(prefix="bedrock-relay-", suffix=".log", delete=False)
        self.log_path = self.log.name
        self.p = subprocess.Popen([BIN, *args], env=env, stdout=subprocess.DEVNULL, stderr=self.log)

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
        self.log.close()
        os.unlink(self.log_path)


def start_sim(*extra):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = Proc(["sim", "--listen", f"127.0.0.1:{port}", *extra], clean_env(), url)
    wait_for(url + "/_sim/log")
    return proc


@pytest.fixture(scope="session")
def sim():
    proc = start_sim("--access-key-id", RELAY_KEY, "--secret-access-key", RELAY_SECRET)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def clean_sim():
    proc = start_sim()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def relay(sim):
    port, admin = free_port(), free_port()
    env = clean_env(
        AWS_ACCESS_KEY_ID=RELAY_KEY,
        AWS_SECRET_ACCESS_KEY=RELAY_SECRET,
        AWS_REGION="us-east-1",
        BEDROCK_RELAY_BACKOFF_BASE="1ms",
        BEDROCK_RELAY_BACKOFF_MAX="5ms",
    )
    proc = Proc(["serve", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
                 "--upstream", sim.url], env, f"http://127.0.0.1:{port}")
    proc.admin = f"http://127.0.0.1:{admin}"
    wait_for(proc.admin + "/healthz")
    yield proc
    proc.stop()


def client(endpoint, key=CLIENT_KEY, secret=CLIENT_SECRET):
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1}, read_timeout=30),
    )


def add_faults(sim_url, rules):
    req = urllib.request.Request(sim_url + "/_sim/faults", data=json.dumps(rules).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()


def sim_log(sim_url, counts=False):
    """The simulator's request log: the model requests; with `counts`, also the CountTokens
    requests the relay makes before a continuation."""
    entries = json.loads(urllib.request.urlopen(sim_url + "/_sim/log").read())
    return [e for e in entries if counts or e.get("operation") != "CountTokens"]
