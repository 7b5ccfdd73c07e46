"""A stand-in application for the compose example: streams answers through the relay forever.

It knows nothing about the relay: boto3 reads AWS_ENDPOINT_URL_BEDROCK_RUNTIME. Every answer
arrives whole although the simulator behind the relay breaks one attempt in five.
"""
import itertools
import time

import boto3
from botocore.config import Config

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
client = boto3.client("bedrock-runtime", config=Config(retries={"total_max_attempts": 1}))

for n in itertools.count(1):
    prompt = f"Write about rivers, part {n} sim:len=120"
    started = time.monotonic()
    out = client.converse_stream(modelId=MODEL, messages=[{"role": "user", "content": [{"text": prompt}]}])
    text, stop = "", None
    for event in out["stream"]:
        text += event.get("contentBlockDelta", {}).get("delta", {}).get("text", "")
        stop = event.get("messageStop", {}).get("stopReason", stop)
    print(f"answer {n}: {len(text)} characters, stop={stop}, {time.monotonic() - started:.1f}s", flush=True)
    time.sleep(1)
