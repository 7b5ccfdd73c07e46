"""The admin status page (`/`) opened in a real browser: headless Chromium (Debian's
`chromium`) renders it while a relay heals streams from a faulty simulator, driven by boto3.

The test asserts on what the rendered DOM shows (healed and failed counts, the heal ratio, a
model name, the interruptions list with how each ended, usage by model, an open stream) and
keeps a screenshot under tests/artifacts/ (gitignored). docs/status-page.png (the README's
picture) is written when missing, or refreshed with BEDROCK_RELAY_UPDATE_DOCS=1.

Without Chromium the test is skipped locally and FAILS in CI (CI=true): `.ci/run` installs it.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from html.parser import HTMLParser

import pytest

from conftest import ROOT, RELAY_KEY, RELAY_SECRET, Proc, add_faults, clean_env, client, free_port, start_sim, wait_for

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
PROFILE = "us." + MODEL
ARTIFACTS = os.path.join(ROOT, "tests", "artifacts")
DOCS_PNG = os.path.join(ROOT, "docs", "status-page.png")


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("chromium is not installed (apt-get install -y chromium); CI must run this test")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


def browse(browser, url, *what):
    """Run headless Chromium on `url` with a fresh profile; returns stdout."""
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        out = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=3000",
             *what, url],
            capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class Cells(HTMLParser):
    """Text by element id, and the rows (cell texts) of each table body."""

    def __init__(self):
        super().__init__()
        self.ids, self.tables = {}, {}
        self.stack, self.table, self.row, self.cell = [], None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.stack.append([a.get("id"), ""])
        if tag == "table":
            self.table = a.get("id")
            self.tables[self.table] = []
        elif tag == "tr" and self.table:
            self.row = []
        elif tag == "td" and self.row is not None:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "td" and self.row is not None and self.cell is not None:
            self.row.append(self.cell.strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            if self.row:
                self.tables[self.table].append(self.row)
            self.row = None
        elif tag == "table":
            self.table = None
        if self.stack:
            ident, text = self.stack.pop()
            if ident:
                self.ids[ident] = text.strip()
            if self.stack:
                self.stack[-1][1] += text

    def handle_data(self, data):
        if self.stack:
            self.stack[-1][1] += data
        if self.cell is not None:
            self.cell += data


def converse(c, model, prompt):
    out = c.converse_stream(modelId=model, messages=[{"role": "user", "content": [{"text": prompt}]}])
    text = []
    for e in out["stream"]:
        if "contentBlockDelta" in e:
            text.append(e["contentBlockDelta"]["delta"].get("text", ""))
    return "".join(text)


@pytest.fixture(scope="module")
def relay_with_history():
    sim = start_sim("--access-key-id", RELAY_KEY, "--secret-access-key", RELAY_SECRET)
    port, admin = free_port(), free_port()
    env = clean_env(AWS_ACCESS_KEY_ID=RELAY_KEY, AWS_SECRET_ACCESS_KEY=RELAY_SECRET, AWS_REGION="us-east-1",
                    BEDROCK_RELAY_BACKOFF_BASE="1ms", BEDROCK_RELAY_BACKOFF_MAX="5ms")
    relay = Proc(["serve", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
                  "--upstream", sim.url, "--stall-timeout", "60s"], env, f"http://127.0.0.1:{port}")
    relay.admin = f"http://127.0.0.1:{admin}"
    wait_for(relay.admin + "/healthz")
    c = client(relay.url)
    # Three streams healed (reset, the upstream's exception, truncation), one that cannot be.
    for i, fault in enumerate([
        {"kind": "reset_after_events", "events": 7},
        {"kind": "exception", "events": 9, "type": "modelStreamErrorException"},
        {"kind": "truncate", "events": 11},
    ]):
        tag = f"status-heal-{i}"
        add_faults(sim.url, [{"tag": tag, "attempts": [1], **fault}])
        assert converse(c, PROFILE if i == 0 else MODEL, f"Tell me about harbours sim:len=40 sim:tag={tag}")
    add_faults(sim.url, [{"tag": "status-fail", "kind": "reset_after_events", "events": 6}])
    with pytest.raises(Exception):
        converse(c, MODEL, "Tell me about rivers sim:len=40 sim:tag=status-fail")
    c.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "Hello sim:len=10"}]}])
    # One stream open while the page is looked at: stalled upstream after a few events.
    add_faults(sim.url, [{"tag": "status-open", "kind": "stall", "events": 3, "duration": "25s"}])
    opened = threading.Thread(target=lambda: _quietly(converse, client(relay.url), MODEL,
                                                      "Tell me about ports sim:len=40 sim:tag=status-open"),
                              daemon=True)
    opened.start()
    deadline = time.time() + 10
    while time.time() < deadline and status(relay)["streams_open"] < 1:
        time.sleep(0.05)
    yield relay, sim
    relay.stop()
    sim.stop()


def _quietly(f, *args):
    try:
        f(*args)
    except Exception:  # the relay stops under it at the end of the test
        pass


def status(relay):
    return json.loads(urllib.request.urlopen(relay.admin + "/status.json", timeout=5).read())


def test_status_json_counts_what_happened(relay_with_history):
    relay, _ = relay_with_history
    s = status(relay)
    h = s["last_hour"]
    assert (h["healed"], h["failed"], h["interrupted"]) == (3, 1, 4), s
    assert h["heal_ratio"] == 0.75
    assert s["streams_open"] == 1, s
    assert [i["outcome"] for i in s["interruptions"]] == ["failed", "healed", "healed", "healed"]
    assert {i["fault"] for i in s["interruptions"]} >= {"reset", "exception", "truncated"}
    usage = {u["model"]: u for u in s["usage"]}
    assert usage[MODEL]["output"] > 0 and usage[MODEL]["input"] > 0, usage
    assert usage[MODEL]["heal"] > 0, "healing cost counted"
    assert s["retry_budget"]["tokens"] > 0
    assert s["upstream"]["attempts_ok"] > 0 and s["upstream"]["attempts_failed"] >= 1
    # The same usage in Prometheus, bounded labels (inbound auth is off: client "-").
    metrics = urllib.request.urlopen(relay.admin + "/metrics").read().decode()
    line = re.search(r'bedrock_relay_tokens_total\{client="-",kind="output",model="%s"\} (\d+)' % re.escape(MODEL),
                     metrics)
    assert line and int(line.group(1)) == usage[MODEL]["output"], metrics
    assert 'bedrock_relay_heal_tokens_total{client="-",kind="output",model="%s"}' % MODEL in metrics
    # Nothing secret or request-derived beyond the model label.
    raw = json.dumps(s)
    for secret in (RELAY_KEY, RELAY_SECRET, "harbours", "Signature", "123456789012"):
        assert secret not in raw


def test_status_page_in_headless_chromium(relay_with_history):
    browser = chromium()
    relay, _ = relay_with_history
    url = relay.admin + "/"
    dom = browse(browser, url, "--dump-dom")
    page = Cells()
    page.feed(dom)
    ids = page.ids
    assert ids["healed"] == "3" and ids["failed"] == "1", ids
    assert ids["heal-ratio"] == "75.0%", ids
    assert ids["interrupted"] == "4"
    assert ids["streams-open"] == "1", ids
    assert ids["live"].startswith("live"), ids["live"]
    rows = [r for r in page.tables["interruptions"] if len(r) == 8]
    assert len(rows) == 4, page.tables
    assert [r[4] for r in rows] == ["failed", "healed", "healed", "healed"], rows
    assert all(r[2] == MODEL and r[1] == "ConverseStream" for r in rows), rows
    assert {r[3] for r in rows} >= {"reset", "exception", "truncated"}, rows
    usage = [r for r in page.tables["usage"] if len(r) == 6]
    assert usage and usage[0][0] == MODEL, page.tables["usage"]
    assert int(usage[0][2].replace(",", "")) > 0
    # Nothing loaded from elsewhere: no external URL in the page at all.
    assert "http://" not in dom.replace(relay.admin, "") and "https://" not in dom

    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, "status-page.png")
    if os.path.exists(shot):
        os.unlink(shot)
    browse(browser, url, f"--screenshot={shot}", "--window-size=1280,900", "--hide-scrollbars")
    with open(shot, "rb") as f:
        png = f.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, len(png)
    if not os.path.exists(DOCS_PNG) or os.environ.get("BEDROCK_RELAY_UPDATE_DOCS") == "1":
        shutil.copyfile(shot, DOCS_PNG)
