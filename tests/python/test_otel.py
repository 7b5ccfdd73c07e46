"""OpenTelemetry export checked at a real OTLP receiver (http/protobuf, decoded with the
maintained `opentelemetry-proto` package): a ConverseStream the simulator cuts twice shows up
as one server span carrying the client's trace id and parent, three attempt spans, resume
events naming the strategy, GenAI attributes with the summed usage, GenAI metrics; nothing of
the prompt, the answer, a key or a signature in anything exported. And an endpoint that is
down costs the request nothing: it is answered, the failed export is counted.
"""
import gzip
import os
import re
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (ExportMetricsServiceRequest,
                                                                         ExportMetricsServiceResponse)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                     ExportTraceServiceResponse)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from conftest import BIN, RELAY_KEY, RELAY_SECRET, add_faults, clean_env, client, free_port, sim_log, wait_for

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"


class Receiver:
    """A tiny OTLP/HTTP receiver: POST /v1/traces and /v1/metrics, protobuf (gzip or not)."""

    def __init__(self):
        self.raw = []  # every request body, decompressed
        self.traces = []  # ExportTraceServiceRequest
        self.metrics = []  # ExportMetricsServiceRequest
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    msg, reply = ExportTraceServiceRequest(), ExportTraceServiceResponse()
                elif self.path == "/v1/metrics":
                    msg, reply = ExportMetricsServiceRequest(), ExportMetricsServiceResponse()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                msg.ParseFromString(body)
                with receiver.lock:
                    receiver.raw.append(body)
                    (receiver.traces if self.path == "/v1/traces" else receiver.metrics).append(msg)
                out = reply.SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self):
        """(resource attributes, span) for every span received."""
        with self.lock:
            return [(attrs(rs.resource.attributes), span) for req in self.traces for rs in req.resource_spans
                    for ss in rs.scope_spans for span in ss.spans]

    def metric_names(self):
        with self.lock:
            return {m.name for req in self.metrics for rm in req.resource_metrics for sm in rm.scope_metrics
                    for m in sm.metrics}

    def close(self):
        self.server.shutdown()


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attrs(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def strings(v):
    """Every string inside an attribute value."""
    if isinstance(v, str):
        yield v
    elif isinstance(v, list):
        for x in v:
            yield from strings(x)


def start_relay(sim, endpoint, **extra):
    port, admin = free_port(), free_port()
    log = tempfile.NamedTemporaryFile(prefix="relay-otel-", suffix=".log", delete=False)
    env = {k: v for k, v in clean_env().items() if not k.startswith("OTEL_")}
    env.update(AWS_ACCESS_KEY_ID=RELAY_KEY, AWS_SECRET_ACCESS_KEY=RELAY_SECRET, AWS_REGION="us-east-1",
               BEDROCK_RELAY_BACKOFF_BASE="1ms", BEDROCK_RELAY_BACKOFF_MAX="5ms",
               OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_BSP_SCHEDULE_DELAY="100",
               OTEL_METRIC_EXPORT_INTERVAL="300", OTEL_SERVICE_NAME="relay-under-test",
               OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=test", **extra)
    args = ["serve", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
            "--upstream", sim.url, "--log-format", "json"]
    p = subprocess.Popen([BIN, *args], env=env, stdout=subprocess.DEVNULL, stderr=log)
    wait_for(f"http://127.0.0.1:{admin}/healthz")
    return SimpleNamespace(url=f"http://127.0.0.1:{port}", admin=f"http://127.0.0.1:{admin}", p=p, log=log)


def stop_relay(r):
    r.p.terminate()
    r.p.wait(10)
    r.log.close()
    os.unlink(r.log.name)


@pytest.fixture(scope="module")
def receiver():
    rx = Receiver()
    yield rx
    rx.close()


@pytest.fixture(scope="module")
def traced_relay(sim, receiver):
    r = start_relay(sim, receiver.url)
    yield r
    stop_relay(r)


def traced_client(url):
    c = client(url)

    def inject(request, **_):
        request.headers["traceparent"] = TRACEPARENT
        request.headers["tracestate"] = "vendor=opaque"

    c.meta.events.register("before-send.bedrock-runtime.ConverseStream", inject)
    return c


def wait_until(check, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    return check()


def test_a_stream_healed_twice_is_one_server_span_with_three_attempts(traced_relay, sim, receiver):
    tag = "otel-twice"
    prompt = f"Describe the tidal marshes of the Wadden Sea sim:len=80 sim:tag={tag}"
    add_faults(sim.url, [{"tag": tag, "attempts": [1], "kind": "reset_after_events", "events": 8},
                         {"tag": tag, "attempts": [2], "kind": "reset_after_events", "events": 8}])
    out = traced_client(traced_relay.url).converse_stream(
        modelId=MODEL, messages=[{"role": "user", "content": [{"text": prompt}]}],
        inferenceConfig={"maxTokens": 900})
    text, usage, stop = "", None, None
    for ev in out["stream"]:
        (kind, body), = ev.items()
        if kind == "contentBlockDelta":
            text += body["delta"]["text"]
        elif kind == "messageStop":
            stop = body["stopReason"]
        elif kind == "metadata":
            usage = body["usage"]
    attempts = [e for e in sim_log(sim.url) if e.get("tag") == tag]
    assert len(attempts) == 3, attempts
    assert text == attempts[0]["intended"], "healed twice into the whole answer"

    def ours():
        return [(res, s) for res, s in receiver.spans() if s.trace_id.hex() == TRACE_ID]

    def complete():
        spans = ours()
        servers = [s for _, s in spans if s.kind == Span.SPAN_KIND_SERVER]
        clients = [s for _, s in spans if s.kind == Span.SPAN_KIND_CLIENT]
        return spans if len(servers) == 1 and len(clients) == 3 else None

    spans = wait_until(complete)
    assert spans, [(s.name, s.kind) for _, s in ours()]
    (resource, server), = [(res, s) for res, s in spans if s.kind == Span.SPAN_KIND_SERVER]
    assert resource["service.name"] == "relay-under-test"
    assert resource["deployment.environment.name"] == "test"
    # The client's traceparent is the parent.
    assert server.parent_span_id.hex() == CLIENT_SPAN
    assert server.name == f"chat {MODEL}"
    a = attrs(server.attributes)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "aws.bedrock"
    assert a["gen_ai.request.model"] == MODEL
    assert a["gen_ai.request.max_tokens"] == 900
    assert a["gen_ai.response.finish_reasons"] == [stop]
    assert a["gen_ai.usage.input_tokens"] == usage["inputTokens"]
    assert a["gen_ai.usage.output_tokens"] == usage["outputTokens"]
    assert a["bedrock_relay.attempts"] == 3
    assert a["bedrock_relay.resumes"] == 2
    assert a["bedrock_relay.strategy"] == "prefill"
    assert a["bedrock_relay.healed"] is True
    assert "bedrock_relay.waited_ms" in a
    assert a["http.response.status_code"] == 200
    # One event per resume, naming the strategy.
    resumes = [attrs(e.attributes) for e in server.events if e.name == "bedrock_relay.resume"]
    assert [r["bedrock_relay.strategy"] for r in resumes] == ["prefill", "prefill"], resumes
    assert [r["bedrock_relay.resume"] for r in resumes] == [1, 2]
    assert all(r["bedrock_relay.interruption"] == "reset" for r in resumes), resumes
    # Three attempt spans, children of the server span, in order; the first two broke.
    tries = sorted((s for _, s in spans if s.kind == Span.SPAN_KIND_CLIENT),
                   key=lambda s: attrs(s.attributes)["bedrock_relay.attempt"])
    assert [attrs(s.attributes)["bedrock_relay.attempt"] for s in tries] == [1, 2, 3]
    for s in tries:
        assert s.parent_span_id == server.span_id
        assert attrs(s.attributes)["gen_ai.request.model"] == MODEL
    assert [attrs(s.attributes).get("error.type") for s in tries] == ["reset", "reset", None]
    assert tries[0].start_time_unix_nano < tries[1].start_time_unix_nano < tries[2].start_time_unix_nano

    # GenAI metrics arrive too.
    want = {"gen_ai.client.token.usage", "gen_ai.client.operation.duration",
            "gen_ai.client.operation.time_to_first_chunk"}
    assert wait_until(lambda: want <= receiver.metric_names()), receiver.metric_names()

    # No content, key or signature in anything exported (decoded values and raw bytes).
    with receiver.lock:
        raw = b"".join(receiver.raw)
    secrets = [RELAY_SECRET, "client-secret-that-bedrock-would-reject", "Signature=", "AWS4-HMAC-SHA256",
               "Wadden", "tidal marshes"]
    answer_words = [w for w in re.findall(r"\w{6,}", text)]
    windows = [text[i:i + 24] for i in range(0, max(1, len(text) - 24), 17)]
    for needle in secrets + windows:
        assert needle.encode() not in raw, needle
    exported = [v for _, s in spans for v in list(attrs(s.attributes).values())
                + [x for e in s.events for x in attrs(e.attributes).values()]]
    for v in exported:
        for s in strings(v):
            assert s not in text or len(s) < 12, s
            assert not any(w in s for w in answer_words if len(w) >= 8 and w not in MODEL), s


def test_an_endpoint_that_is_down_costs_the_request_nothing(sim):
    dead = f"http://127.0.0.1:{free_port()}"
    r = start_relay(sim, dead, OTEL_BSP_EXPORT_TIMEOUT="500")
    try:
        c = client(r.url)
        for i in range(5):
            started = time.time()
            reply = c.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": f"hi {i}"}]}])
            assert reply["output"]["message"]["content"][0]["text"]
            assert time.time() - started < 2

        def failed():
            body = urllib.request.urlopen(r.admin + "/metrics").read().decode()
            m = re.search(r"^bedrock_relay_otel_spans_failed_total (\d+)", body, re.M)
            return m and int(m.group(1)) >= 5

        assert wait_until(failed, 10), "the failed export is counted"
    finally:
        stop_relay(r)
