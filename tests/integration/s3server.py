# SPDX-License-Identifier: Apache-2.0
"""A real S3 endpoint for the integration suite: moto's server mode
(`moto_server` from the virtual environment, PyPI moto[server]) on
127.0.0.1 and a free port, with signature checking ON.

Setup, in order: start moto_server, wait until it answers, create an IAM
user with an s3:* policy and an access key (tests use those credentials),
create the buckets (VERSIONED with versioning Enabled, PLAIN without),
then switch moto's IAM authentication on (POST /moto-api/reset-auth 0):
from then on every request must carry a valid SigV4 signature of a known
key, so a wrong signature, key encoding or x-amz-content-sha256 from our
client fails the test as real S3 would (moto does not check Content-MD5:
the tests compare bytes with boto3 instead).

Everything runs on 127.0.0.1; waits are bounded polls.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

VERSIONED = "hodei-versioned"
PLAIN = "hodei-plain"
REGION = "us-east-1"
START_TIMEOUT_S = 60.0

_POLICY = json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
})


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto_server_path():
    """moto_server beside the running Python (the suite's .venv)."""
    return Path(sys.executable).parent / "moto_server"


class S3Server:
    """One moto_server process. endpoint, access_key, secret_key, client()
    (a boto3 S3 client with the test user's credentials), env() (the
    variables hodei-audit reads), stop()."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.log_path = self.dir / "moto.log"
        self.access_key = None
        self.secret_key = None

    def start(self):
        exe = moto_server_path()
        if not exe.exists():
            raise RuntimeError(f"{exe} missing: pip install -r tests/integration/requirements.txt")
        env = dict(os.environ)
        # No real AWS credentials or config may leak into moto's setup.
        for k in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            env.pop(k, None)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready()
        self._setup()
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"moto_server not ready after {START_TIMEOUT_S}s: {self.log_tail()}")

    def _boto(self, service, key="setup", secret="setup"):
        import boto3
        from botocore.config import Config

        return boto3.client(
            service, endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=key, aws_secret_access_key=secret,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def _setup(self):
        iam = self._boto("iam")
        iam.create_user(UserName="hodei-test")
        iam.put_user_policy(UserName="hodei-test", PolicyName="s3-all", PolicyDocument=_POLICY)
        k = iam.create_access_key(UserName="hodei-test")["AccessKey"]
        self.access_key, self.secret_key = k["AccessKeyId"], k["SecretAccessKey"]
        s3 = self._boto("s3")
        s3.create_bucket(Bucket=VERSIONED)
        s3.put_bucket_versioning(Bucket=VERSIONED,
                                 VersioningConfiguration={"Status": "Enabled"})
        s3.create_bucket(Bucket=PLAIN)
        # text/plain: with urllib's default form type, Flask would eat the body.
        req = urllib.request.Request(self.endpoint + "/moto-api/reset-auth", data=b"0",
                                     method="POST", headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as r:
            if r.status != 200:
                raise RuntimeError(f"moto reset-auth: HTTP {r.status}")

    def client(self):
        """boto3 S3 client with the test user's credentials (auth is on)."""
        return self._boto("s3", self.access_key, self.secret_key)

    def env(self, bucket=VERSIONED, **extra):
        """The environment hodei-audit reads for this server."""
        e = {
            "HODEI_S3_ENDPOINT": self.endpoint,
            "HODEI_S3_BUCKET": bucket,
            "HODEI_S3_REGION": REGION,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }
        e.update(extra)
        return e

    def log_tail(self, n=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        self._log.close()
