# SPDX-License-Identifier: Apache-2.0
"""The S3 client (net/s3.c) through `hodei-audit s3` against a real S3
endpoint: moto's server mode with SigV4 checking on (s3server.py), so
every request our client signs is checked as S3 would.

What our client stored is read back with boto3, never with our client: a
bug that writes and reads wrong the same way cannot pass. Exit codes as in
tools/hodei-audit-s3.c: 0 ok, 1 not Enabled / no bucket / no key, 2 usage,
3 local file, 4 credentials refused, 5 other S3 errors (network, ...).
"""
import hashlib
import json
import os
import subprocess

import pytest

import hodei
import s3server

CLI_TIMEOUT_S = 120
MIB = 1 << 20


def run(env, *args, stdin=None, binary=False):
    """Runs hodei-audit with only the given S3 environment (no HODEI_* or
    AWS_* of the caller's)."""
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("HODEI_", "AWS_"))}
    e.update(env)
    r = subprocess.run([str(hodei.CLI), *args], input=stdin, capture_output=True,
                       text=not binary, env=e, timeout=CLI_TIMEOUT_S)
    # A sanitizer build must not pass a test by exiting with the right code.
    assert not hodei.SANITIZER_REPORT.search(stderr_text(r)), stderr_text(r)
    return r


def stderr_text(r):
    return r.stderr if isinstance(r.stderr, str) else r.stderr.decode(errors="replace")


def put(s3, path, key, bucket=s3server.VERSIONED, extra=None, args=()):
    r = run(s3.env(bucket, **(extra or {})), "s3", "put", str(path), key, "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def make_file(tmp_path, name, size, seed=0):
    data = hashlib.shake_256(f"{name}-{seed}".encode()).digest(size) if size else b""
    p = tmp_path / name
    p.write_bytes(data)
    return p, data


# ---- check ---------------------------------------------------------------------


def test_check_versioned_bucket(s3_server):
    r = run(s3_server.env(), "s3", "check", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["versioning"] == "Enabled"
    assert doc["bucket"] == s3server.VERSIONED
    assert doc["endpoint"] == s3_server.endpoint
    assert doc["addressing"] == "path"
    text = run(s3_server.env(), "s3", "check")
    assert text.returncode == 0 and "Enabled" in text.stdout


def test_check_unversioned_bucket_is_refused(s3_server):
    r = run(s3_server.env(s3server.PLAIN), "s3", "check")
    assert r.returncode == 1, r.stderr
    assert "not Enabled" in r.stderr and s3server.PLAIN in r.stderr
    assert "never enabled" in r.stdout


def test_check_suspended_versioning_is_refused(s3_server):
    b = s3_server.client()
    b.create_bucket(Bucket="hodei-suspended")
    b.put_bucket_versioning(Bucket="hodei-suspended",
                            VersioningConfiguration={"Status": "Suspended"})
    r = run(s3_server.env("hodei-suspended"), "s3", "check", "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["versioning"] == "Suspended"


def test_check_missing_bucket(s3_server):
    r = run(s3_server.env("hodei-no-such-bucket"), "s3", "check")
    assert r.returncode == 1
    assert "does not exist" in r.stderr


def test_check_without_bucket_or_credentials_is_a_usage_error(s3_server):
    env = s3_server.env()
    del env["HODEI_S3_BUCKET"]
    r = run(env, "s3", "check")
    assert r.returncode == 2 and "HODEI_S3_BUCKET" in r.stderr
    env = s3_server.env()
    del env["AWS_SECRET_ACCESS_KEY"]
    r = run(env, "s3", "check")
    assert r.returncode == 2 and "credentials" in r.stderr


# ---- put, verified with boto3 ------------------------------------------------------


@pytest.mark.parametrize("key", [
    "segments/t1/2024/02/29/00000000000000ff.hseg",
    "odd keys/with space+plus%percent~tilde/ünïcödé €/x.hseg",
    "a//double/./dot/../x",
])
def test_put_small_single_request(s3_server, tmp_path, key):
    path, data = make_file(tmp_path, "small.bin", 100_000)
    out = put(s3_server, path, key)
    assert out["upload"] == "single" and out["parts"] == 1
    assert out["bytes"] == len(data)
    got = s3_server.client().get_object(Bucket=s3server.VERSIONED, Key=key)
    assert got["Body"].read() == data
    assert got["VersionId"] == out["version_id"]
    assert got["ETag"].strip('"') == hashlib.md5(data).hexdigest() == out["etag"]
    assert got["Metadata"] == {"hodei-xxh3": out["checksum"]}
    assert len(out["checksum"]) == 16


def test_put_empty_file(s3_server, tmp_path):
    path, _ = make_file(tmp_path, "empty.bin", 0)
    out = put(s3_server, path, "empty/object")
    assert out["upload"] == "single" and out["bytes"] == 0
    got = s3_server.client().get_object(Bucket=s3server.VERSIONED, Key="empty/object")
    assert got["Body"].read() == b"" and got["VersionId"] == out["version_id"]


def test_put_multipart(s3_server, tmp_path):
    """6 MiB + a bit with 5 MiB parts: two parts, the second short."""
    path, data = make_file(tmp_path, "large.bin", 6 * MIB + 12345)
    key = "segments/big/2025/01/01/0000000000000abc.hseg"
    out = put(s3_server, path, key, extra={"HODEI_S3_MULTIPART_THRESHOLD": "5MiB",
                                           "HODEI_S3_PART_SIZE": "5MiB"})
    assert out["upload"] == "multipart" and out["parts"] == 2
    c = s3_server.client()
    got = c.get_object(Bucket=s3server.VERSIONED, Key=key)
    assert got["Body"].read() == data
    assert got["VersionId"] == out["version_id"]
    assert got["Metadata"] == {"hodei-xxh3": out["checksum"]}
    md5s = hashlib.md5(data[:5 * MIB]).digest() + hashlib.md5(data[5 * MIB:]).digest()
    assert got["ETag"].strip('"') == f"{hashlib.md5(md5s).hexdigest()}-2" == out["etag"]
    # Nothing left behind: the upload was completed, not left open.
    assert not c.list_multipart_uploads(Bucket=s3server.VERSIONED).get("Uploads")


def test_put_at_the_threshold_is_one_request(s3_server, tmp_path):
    path, data = make_file(tmp_path, "edge.bin", 5 * MIB)
    env = {"HODEI_S3_MULTIPART_THRESHOLD": "5MiB", "HODEI_S3_PART_SIZE": "5MiB"}
    assert put(s3_server, path, "edge/at", extra=env)["upload"] == "single"
    path2, data2 = make_file(tmp_path, "edge1.bin", 5 * MIB + 1)
    out = put(s3_server, path2, "edge/over", extra=env)
    assert out["upload"] == "multipart" and out["parts"] == 2
    got = s3_server.client().get_object(Bucket=s3server.VERSIONED, Key="edge/over")
    assert got["Body"].read() == data2


def test_put_with_a_given_checksum(s3_server, tmp_path):
    path, _ = make_file(tmp_path, "c.bin", 10)
    out = put(s3_server, path, "given/checksum", args=("--checksum", "0123456789abcdef"))
    assert out["checksum"] == "0123456789abcdef"
    head = s3_server.client().head_object(Bucket=s3server.VERSIONED, Key="given/checksum")
    assert head["Metadata"] == {"hodei-xxh3": "0123456789abcdef"}


def test_put_to_unversioned_bucket_has_no_version_id(s3_server, tmp_path):
    path, data = make_file(tmp_path, "p.bin", 1000)
    out = put(s3_server, path, "plain/key", bucket=s3server.PLAIN)
    assert out["version_id"] in ("", "null")
    got = s3_server.client().get_object(Bucket=s3server.PLAIN, Key="plain/key")
    assert got["Body"].read() == data


def test_put_missing_file_and_bad_key(s3_server, tmp_path):
    r = run(s3_server.env(), "s3", "put", str(tmp_path / "nope"), "k")
    assert r.returncode == 3
    path, _ = make_file(tmp_path, "k.bin", 1)
    r = run(s3_server.env(), "s3", "put", str(path), "x" * 1025)
    assert r.returncode == 2 and "key" in r.stderr


# ---- head, get, ls -------------------------------------------------------------------


def test_head(s3_server, tmp_path):
    path, data = make_file(tmp_path, "h.bin", 4321)
    out = put(s3_server, path, "head/me")
    r = run(s3_server.env(), "s3", "head", "head/me", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    ref = s3_server.client().head_object(Bucket=s3server.VERSIONED, Key="head/me")
    assert doc["size"] == len(data) == ref["ContentLength"]
    assert doc["version_id"] == out["version_id"] == ref["VersionId"]
    assert doc["etag"] == ref["ETag"].strip('"')
    assert doc["checksum"] == out["checksum"] == ref["Metadata"]["hodei-xxh3"]
    r = run(s3_server.env(), "s3", "head", "head/not-there")
    assert r.returncode == 1 and "not found" in r.stderr


def test_get_latest_and_by_version(s3_server, tmp_path):
    p1, d1 = make_file(tmp_path, "v1.bin", 3000, seed=1)
    p2, d2 = make_file(tmp_path, "v2.bin", 5000, seed=2)
    v1 = put(s3_server, p1, "get/versions")["version_id"]
    v2 = put(s3_server, p2, "get/versions")["version_id"]
    assert v1 != v2
    r = run(s3_server.env(), "s3", "get", "get/versions", binary=True)
    assert r.returncode == 0, stderr_text(r)
    assert r.stdout == d2
    r = run(s3_server.env(), "s3", "get", "get/versions", "--version-id", v1, binary=True)
    assert r.returncode == 0, stderr_text(r)
    assert r.stdout == d1
    out = tmp_path / "out.bin"
    r = run(s3_server.env(), "s3", "get", "get/versions", "--version-id", v2, "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == d2
    head = run(s3_server.env(), "s3", "head", "get/versions", "--version-id", v1, "--json")
    assert json.loads(head.stdout)["size"] == len(d1)


def test_get_multipart_object(s3_server, tmp_path):
    path, data = make_file(tmp_path, "mp.bin", 11 * MIB + 7)
    out = put(s3_server, path, "get/multipart", extra={"HODEI_S3_MULTIPART_THRESHOLD": "5MiB",
                                                       "HODEI_S3_PART_SIZE": "5MiB"})
    assert out["parts"] == 3
    dest = tmp_path / "mp.out"
    r = run(s3_server.env(), "s3", "get", "get/multipart", "-o", str(dest))
    assert r.returncode == 0, r.stderr
    assert dest.read_bytes() == data


def test_get_missing_and_too_big(s3_server, tmp_path):
    r = run(s3_server.env(), "s3", "get", "get/absent", "-o", str(tmp_path / "x"))
    assert r.returncode == 1 and "NoSuchKey" in r.stderr
    path, _ = make_file(tmp_path, "big.bin", 10_000)
    put(s3_server, path, "get/capped")
    r = run(s3_server.env(), "s3", "get", "get/capped", "--max-bytes", "1000",
            "-o", str(tmp_path / "y"))
    assert r.returncode == 3 and "larger than 1000" in r.stderr


def test_ls_lists_every_version(s3_server, tmp_path):
    keys = {}
    for i in range(3):
        path, _ = make_file(tmp_path, f"ls{i}.bin", 100 + i, seed=i)
        keys[i] = put(s3_server, path, "ls/same" if i < 2 else "ls/other")["version_id"]
    # A page of 1 entry: the listing must follow the markers.
    r = run(s3_server.env(HODEI_S3_LIST_PAGE_KEYS="1"), "s3", "ls", "ls/", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    ref = s3_server.client().list_object_versions(Bucket=s3server.VERSIONED, Prefix="ls/")
    assert sorted((v["key"], v["version_id"]) for v in rows) == \
        sorted((v["Key"], v["VersionId"]) for v in ref["Versions"])
    assert {v["version_id"] for v in rows} == set(keys.values())
    latest = {v["key"]: v["version_id"] for v in rows if v["latest"] == "true"}
    assert latest == {"ls/same": keys[1], "ls/other": keys[2]}


# ---- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize("form", ["env", "ini"])
def test_credentials_file(s3_server, tmp_path, form):
    f = tmp_path / "creds"
    if form == "env":
        f.write_text(f"# from a Secret\nAWS_ACCESS_KEY_ID={s3_server.access_key}\n"
                     f"AWS_SECRET_ACCESS_KEY=\"{s3_server.secret_key}\"\n")
    else:
        f.write_text(f"[other]\naws_access_key_id = WRONG\naws_secret_access_key = WRONG\n"
                     f"[default]\naws_access_key_id = {s3_server.access_key}\n"
                     f"aws_secret_access_key = {s3_server.secret_key}\nregion = us-east-1\n")
    env = s3_server.env(HODEI_S3_CREDENTIALS_FILE=str(f))
    # The file wins over the variables.
    env["AWS_ACCESS_KEY_ID"] = "AKIAWRONGWRONGWRONG0"
    env["AWS_SECRET_ACCESS_KEY"] = "wrong"
    r = run(env, "s3", "check")
    assert r.returncode == 0, r.stderr
    f.write_text("AWS_ACCESS_KEY_ID=only-the-id\n")
    r = run(env, "s3", "check")
    assert r.returncode == 2 and "aws_secret_access_key" in r.stderr


def test_flags_override_the_environment(s3_server):
    env = s3_server.env(s3server.PLAIN)
    r = run(env, "s3", "check", "--bucket", s3server.VERSIONED, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bucket"] == s3server.VERSIONED


# ---- failures and their kinds ------------------------------------------------------------


def test_wrong_secret_is_an_auth_error(s3_server, tmp_path):
    r = run(s3_server.env(AWS_SECRET_ACCESS_KEY="not-the-secret"), "s3", "check")
    assert r.returncode == 4, r.stderr
    assert "auth" in r.stderr and "SignatureDoesNotMatch" in r.stderr
    path, _ = make_file(tmp_path, "a.bin", 100)
    r = run(s3_server.env(AWS_SECRET_ACCESS_KEY="not-the-secret"), "s3", "put", str(path), "k")
    assert r.returncode == 4, r.stderr


def test_unknown_key_id_is_an_auth_error(s3_server):
    r = run(s3_server.env(AWS_ACCESS_KEY_ID="AKIAUNKNOWNUNKNOWN00"), "s3", "check")
    assert r.returncode == 4, r.stderr
    assert "InvalidAccessKeyId" in r.stderr


def test_stopped_server_is_a_network_error(tmp_path):
    srv = s3server.S3Server(tmp_path / "moto").start()
    try:
        env = srv.env()
        assert run(env, "s3", "check").returncode == 0
    finally:
        srv.stop()
    r = run(env, "s3", "check")
    assert r.returncode == 5, r.stderr
    assert "network" in r.stderr and "retryable" in r.stderr
    path, _ = make_file(tmp_path, "n.bin", 10)
    r = run(env, "s3", "put", str(path), "k")
    assert r.returncode == 5 and "network" in r.stderr
