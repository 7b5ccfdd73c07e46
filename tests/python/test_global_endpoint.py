"""A global AWS_ENDPOINT_URL in a pod: the SDK's own credential calls go to the relay too.

An application with only `AWS_ENDPOINT_URL` pointing at the relay and IRSA-style web identity
credentials (or an SSO profile) must obtain its credentials through the relay and then call
Bedrock through it. The relay passes the credential call on untouched to the service's
endpoint (here the simulator's STS, or a recording stand-in for the SSO portal, through
`--service-upstream`). Calls for other services get an error their SDK can read.
"""
import hashlib
import http.server
import json
import subprocess
import sys
import threading

import pytest

from conftest import RELAY_KEY, RELAY_SECRET, Proc, add_faults, client, clean_env, free_port, sim_log, start_sim, wait_for

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
ROLE_ARN = "arn:aws:iam::123456789012:role/app-role"
# A JWT like the one EKS projects into a pod (header.payload.signature, base64url).
TOKEN = ("eyJhbGciOiJSUzI1NiIsImtpZCI6InNpbSJ9."
         "eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDphcHAiLCJhdWQiOiJzdHMuYW1hem9uYXdzLmNvbSJ9."
         "c2lnbmF0dXJl")

APP = """
import boto3, json, sys
from botocore.config import Config
session = boto3.Session()
c = session.client("bedrock-runtime", config=Config(retries={"total_max_attempts": 1}))
out = c.converse_stream(modelId=sys.argv[1], messages=[{"role": "user", "content": [{"text": sys.argv[2]}]}])
text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in out["stream"] if "contentBlockDelta" in e)
creds = session.get_credentials().get_frozen_credentials()
print(json.dumps({"text": text, "access_key": creds.access_key}))
"""


def start_relay(sim, *extra):
    port, admin = free_port(), free_port()
    env = clean_env(AWS_ACCESS_KEY_ID=RELAY_KEY, AWS_SECRET_ACCESS_KEY=RELAY_SECRET, AWS_REGION="us-east-1")
    proc = Proc(["serve", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
                 "--upstream", sim.url, *extra], env, f"http://127.0.0.1:{port}")
    proc.admin = f"http://127.0.0.1:{admin}"
    wait_for(proc.admin + "/healthz")
    return proc


@pytest.fixture(scope="module")
def sts_sim():
    """The simulator in the role of STS only (Bedrock is the `sim` fixture)."""
    proc = start_sim()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def sts_relay(sim, sts_sim):
    proc = start_relay(sim, "--service-upstream", f"sts={sts_sim.url}")
    yield proc
    proc.stop()


def app_env(tmp_path, relay_url, **extra):
    """The environment of a pod: only the global endpoint variable, nothing Bedrock-specific."""
    env = dict(AWS_ENDPOINT_URL=relay_url, AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE=str(tmp_path / "no-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
               AWS_EC2_METADATA_DISABLED="true", HOME=str(tmp_path))
    env.update(extra)
    return clean_env(**env)


def run_app(env, prompt):
    out = subprocess.run([sys.executable, "-c", APP, MODEL, prompt], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_boto3_with_a_web_identity_token_and_only_the_global_endpoint_gets_credentials_through_the_relay(
        tmp_path, sim, sts_sim, sts_relay, clean_sim):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    env = app_env(tmp_path, sts_relay.url, AWS_WEB_IDENTITY_TOKEN_FILE=str(token_file), AWS_ROLE_ARN=ROLE_ARN,
                  AWS_ROLE_SESSION_NAME="pod-py")
    prompt = "harbours sim:tag=py-irsa"
    add_faults(sim.url, [{"tag": "py-irsa", "attempts": [1], "kind": "reset_after_events", "events": 3}])
    got = run_app(env, prompt)

    direct = client(clean_sim.url).converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": prompt}]}])
    assert got["text"] == direct["output"]["message"]["content"][0]["text"]
    assert got["access_key"].startswith("ASIASIM"), "credentials issued by the simulator's STS"

    sts = [e for e in sim_log(sts_sim.url) if e["operation"] == "AssumeRoleWithWebIdentity"]
    assert sts, "the credential call reached STS"
    call = sts[-1]["body"]
    assert sts[-1]["signature"] == "unsigned" and sts[-1]["status"] == 200, "no relay credentials added"
    assert call["RoleArn"] == ROLE_ARN and call["RoleSessionName"] == "pod-py"
    assert call["WebIdentityToken"] == "sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest(), "token untouched"
    log = sim_log(sim.url)
    assert not [e for e in log if e["operation"] == "AssumeRoleWithWebIdentity"], "not sent to Bedrock"
    bedrock = [e for e in log if e.get("tag") == "py-irsa"]
    assert len(bedrock) == 2 and all(e["signature"] == "valid" for e in bedrock), "healed, re-signed by the relay"


class Portal(http.server.BaseHTTPRequestHandler):
    """Stands in for portal.sso.{region}.amazonaws.com: GetRoleCredentials, recorded."""
    seen = []

    def do_GET(self):
        Portal.seen.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}})
        body = json.dumps({"roleCredentials": {
            "accessKeyId": "ASIAPORTALEXAMPLE", "secretAccessKey": "portal-secret",
            "sessionToken": "portal-session-token", "expiration": 4102444800000}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_boto3_with_an_sso_profile_and_only_the_global_endpoint_gets_role_credentials_through_the_relay(
        tmp_path, sim, clean_sim):
    portal = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    threading.Thread(target=portal.serve_forever, daemon=True).start()
    relay = start_relay(sim, "--service-upstream", f"sso=http://127.0.0.1:{portal.server_port}")
    try:
        start_url = "https://example.awsapps.com/start"
        (tmp_path / "config").write_text(
            "[default]\n"
            f"sso_start_url = {start_url}\nsso_region = us-east-1\n"
            "sso_account_id = 123456789012\nsso_role_name = App\nregion = us-east-1\n")
        cache = tmp_path / ".aws" / "sso" / "cache"
        cache.mkdir(parents=True)
        (cache / (hashlib.sha1(start_url.encode()).hexdigest() + ".json")).write_text(json.dumps({
            "startUrl": start_url, "region": "us-east-1", "accessToken": "sso-access-token-for-tests",
            "expiresAt": "2099-01-01T00:00:00Z"}))
        env = app_env(tmp_path, relay.url, AWS_CONFIG_FILE=str(tmp_path / "config"))
        prompt = "lanterns sim:tag=py-sso"
        add_faults(sim.url, [{"tag": "py-sso", "attempts": [1], "kind": "reset_after_events", "events": 3}])
        got = run_app(env, prompt)
    finally:
        relay.stop()
        portal.shutdown()

    direct = client(clean_sim.url).converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": prompt}]}])
    assert got["text"] == direct["output"]["message"]["content"][0]["text"]
    assert got["access_key"] == "ASIAPORTALEXAMPLE"
    assert len([e for e in sim_log(sim.url) if e.get("tag") == "py-sso"]) == 2, "healed"
    call = Portal.seen[-1]
    assert call["path"].startswith("/federation/credentials?"), call
    assert "role_name=App" in call["path"] and "account_id=123456789012" in call["path"]
    assert call["headers"]["x-amz-sso_bearer_token"] == "sso-access-token-for-tests", "passed on untouched"
    assert "authorization" not in call["headers"], "no relay credentials added"
    assert call["headers"]["host"] == f"127.0.0.1:{portal.server_port}"


WRONG_SERVICE = """
import boto3, sys
from botocore.config import Config
c = boto3.client(sys.argv[1], config=Config(retries={"total_max_attempts": 1}))
getattr(c, sys.argv[2])()
"""


@pytest.mark.parametrize("service,operation", [
    ("sts", "get_caller_identity"),   # query protocol: XML ErrorResponse
    ("ec2", "describe_regions"),      # EC2 query: XML Response/Errors
    ("dynamodb", "list_tables"),      # AWS JSON 1.0
    ("s3", "list_buckets"),           # REST-XML
])
def test_signed_calls_for_other_services_get_a_readable_error_in_their_own_protocol(relay, service, operation):
    env = clean_env(AWS_ACCESS_KEY_ID="AKIDAPP", AWS_SECRET_ACCESS_KEY="app-secret", AWS_ENDPOINT_URL=relay.url,
                    AWS_DEFAULT_REGION="us-east-1")
    out = subprocess.run([sys.executable, "-c", WRONG_SERVICE, service, operation], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert "ClientError" in last and "WrongServiceForRelay" in last, out.stderr
    for part in ["bedrock-relay", f"`{service}`", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "--forward-other-services"]:
        assert part in last, last
    assert "Unable to parse" not in out.stderr
