# SPDX-License-Identifier: Apache-2.0
"""S3 replication (issue #4, DESIGN.md §2.6, §8) with the real hodei-auditd
and a real S3 server (moto's server mode, signatures checked), checked with
boto3 — never with the server's own client:

- every sealed segment is in the versioned bucket under the DESIGN key,
  with the version id the manifest recorded, and the bytes of the local
  file;
- a bucket without versioning: nothing is uploaded, ingest goes on, the
  metrics and the log say why;
- S3 down while events are appended, then back: the backlog drains, each
  segment arrives once (one version), nothing acknowledged is lost; the
  same with the connection cut in the middle of a multipart upload;
- kill -9 between an upload and its manifest record: after a restart the
  upload is recognised (same checksum) and recorded without a second
  version, and the manifest agrees with the bucket.

The S3 endpoint is reached through a TCP proxy (tcpproxy.py) so a test can
take "S3" down without losing moto's in-memory state."""
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

import hodei
import s3server
from tcpproxy import TcpProxy


def manifest_exports(srv):
    """{segment_id hex: version id} of every replicated record, and the set
    of all segment ids, from every shard's manifest (hodei-audit inspect)."""
    versions, segments = {}, {}
    for man in sorted(Path(srv.data_dir).glob("shard-*/manifest.log")):
        out = subprocess.run([str(hodei.CLI), "inspect", str(man), "--json"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        for r in json.loads(out.stdout)["segments"]:  # every record, exports included
            if r["kind"] == "segment":
                segments[r["segment_id"]] = (r["tenant"], man.parent)
            elif r["kind"] == "replicated":
                versions[r["segment_id"]] = r["version_id"]
    return versions, segments


def bucket_versions(s3, bucket, prefix):
    """{key: [version ids]} under prefix, read with boto3."""
    out = {}
    for page in s3.client().get_paginator("list_object_versions").paginate(
            Bucket=bucket, Prefix=prefix):
        for v in page.get("Versions", []):
            out.setdefault(v["Key"], []).append(v["VersionId"])
    return out


def start(server_factory, s3, proxy, bucket=s3server.VERSIONED, prefix=None, args=(), extra=None):
    prefix = prefix or f"t-{uuid.uuid4().hex[:10]}"
    env = s3.env(bucket, HODEI_S3_ENDPOINT=proxy.endpoint, HODEI_S3_PREFIX=prefix, **(extra or {}))
    srv = server_factory(env=env, args=["--seal-rows", "2000", *args])
    return srv, prefix


def append(srv, tenants, per_tenant, batch=1000, detail=b""):
    acked = {}
    for t in tenants:
        stub = srv.stub(srv.admin_key, t)
        n = 0
        while n < per_tenant:
            k = min(batch, per_tenant - n)
            evs = hodei.events(k, start=n, details_json=detail) if detail else hodei.events(k, start=n)
            n += stub.Append(hodei.append_request(evs)).accepted
        acked[t] = n
    return acked


def sealed(srv):
    return srv.metrics().get("hodei_segments_sealed_total")


def wait_drained(srv, timeout_s=180):
    # Every sealed segment recorded as replicated, nothing left unsealed.
    hodei.wait_until(lambda: (m := srv.metrics()).get("hodei_memtable_events") == 0
                     and m.get("hodei_segments_local") > 0
                     and m.get("hodei_segments_replicated") == m.get("hodei_segments_local"),
                     timeout_s, "every segment replicated")


def check_bucket_matches(srv, s3, prefix, bucket=s3server.VERSIONED):
    """Every segment of the manifest: one version in the bucket, the one
    the manifest recorded, holding the local file's bytes."""
    versions, segments = manifest_exports(srv)
    assert segments, "no sealed segment"
    assert set(versions) == set(segments), "a segment is not recorded as replicated"
    objects = bucket_versions(s3, bucket, prefix)
    by_id = {Path(k).stem: k for k in objects}
    assert set(by_id) == set(segments), (sorted(by_id), sorted(segments))
    client = s3.client()
    for seg_id, (tenant, shard_dir) in segments.items():
        key = by_id[seg_id]
        parts = key.split("/")
        assert parts[0] == prefix and parts[1] == "segments" and parts[2] == tenant
        assert len(parts) == 7 and len(parts[3]) == 4 and len(parts[4]) == 2 and len(parts[5]) == 2
        assert objects[key] == [versions[seg_id]], f"{key}: versions {objects[key]}"
        body = client.get_object(Bucket=bucket, Key=key, VersionId=versions[seg_id])["Body"].read()
        local = (shard_dir / "segments" / f"{seg_id}.hseg").read_bytes()
        assert body == local, f"{key}: bytes differ from the local file"
    return len(segments)


def big_segments(srv, proxy):
    """With S3 unreachable, appends 80,000 events to tenant "bulk" whose
    details do not compress, and waits for their two segments of about
    9 MiB (with --seal-rows 40000): above a 5 MiB multipart threshold.
    Returns how many events were acknowledged."""
    proxy.down()
    stub = srv.stub(srv.admin_key, "bulk")
    acked = 0
    for b in range(20):
        evs = [hodei.event(b * 4000 + i, details_json=b'"' + os.urandom(192).hex().encode() + b'"')
               for i in range(4000)]
        acked += stub.Append(hodei.append_request(evs)).accepted
    hodei.wait_until(lambda: sealed(srv) >= 2, 120, "two big segments sealed")
    sizes = [p.stat().st_size for p in Path(srv.data_dir).glob("shard-*/segments/*.hseg")]
    assert min(sizes) > 5 << 20, f"segments of {sizes} bytes would not go multipart"
    return acked


@pytest.fixture
def proxy(s3_server):
    p = TcpProxy(s3_server.port).up()
    yield p
    p.down()


def test_sealed_segments_reach_the_versioned_bucket(server_factory, s3_server, proxy):
    srv, prefix = start(server_factory, s3_server, proxy)
    append(srv, ["acme", "globex", "initech"], 5000)
    wait_drained(srv)
    n = check_bucket_matches(srv, s3_server, prefix)
    m = srv.metrics()
    assert m.get("hodei_replication_segments_total") == n
    assert m.get("hodei_replication_versioning_enabled") == 1
    assert m.get("hodei_replication_lag_seconds") == 0
    assert sum(len(v) for v in bucket_versions(s3_server, s3server.VERSIONED, prefix).values()) == n


def test_unversioned_bucket_is_refused_and_ingest_goes_on(server_factory, s3_server, proxy):
    srv, prefix = start(server_factory, s3_server, proxy, bucket=s3server.PLAIN)
    acked = append(srv, ["acme"], 3000)
    hodei.wait_until(lambda: srv.metrics().get("hodei_replication_errors_total", kind="versioning") >= 1,
                     60, "a versioning refusal counted")
    m = srv.metrics()
    assert m.get("hodei_replication_ready") == 0
    assert m.get("hodei_replication_versioning_enabled") == 0
    assert m.get("hodei_replication_segments_total") == 0
    assert any("versioning" in (l.get("msg") or "") and l.get("level") == "error"
               for l in srv.log_lines()), "the refusal is not in the log"
    assert bucket_versions(s3_server, s3server.PLAIN, prefix) == {}
    assert len(srv.stored("acme")) == acked["acme"]


def test_s3_outage_backlog_drains_once(server_factory, s3_server, proxy):
    proxy.down()
    srv, prefix = start(server_factory, s3_server, proxy, args=["--seal-rows", "10000"])
    acked = append(srv, ["acme", "globex"], 50000, batch=5000)   # 100,000 events
    hodei.wait_until(lambda: sealed(srv) >= 10, 120, "segments sealed during the outage")
    hodei.wait_until(lambda: srv.metrics().get("hodei_replication_errors_total", kind="network") >= 1,
                     60, "network errors counted")
    m = srv.metrics()
    assert m.get("hodei_replication_backlog_segments") >= 1
    assert m.get("hodei_replication_lag_seconds") > 0
    proxy.up()
    wait_drained(srv)
    check_bucket_matches(srv, s3_server, prefix)
    for t, n in acked.items():
        got = srv.stored(t)
        assert [e.seq for e in got] == list(range(1, n + 1))


def test_cut_in_the_middle_of_a_multipart_upload(server_factory, s3_server, proxy):
    """Segments of about 9 MiB (random details do not compress) go up in
    5 MiB parts; the connection dies after 7 MiB of the first upload. The
    upload fails, is retried, and each segment ends as one version."""
    srv, prefix = start(server_factory, s3_server, proxy,
                        args=["--seal-rows", "40000", "--seal-age", "1h"],
                        extra={"HODEI_S3_MULTIPART_THRESHOLD": "5MiB", "HODEI_S3_PART_SIZE": "5MiB"})
    acked = big_segments(srv, proxy)
    proxy.cut_after(7 << 20)
    proxy.up()
    hodei.wait_until(lambda: not proxy.is_up, 120, "the connection cut after 7 MiB")
    errors = srv.metrics().get("hodei_replication_errors_total", kind="network")
    hodei.wait_until(lambda: srv.metrics().get("hodei_replication_errors_total", kind="network")
                     > errors, 120, "the cut upload failed")
    proxy.up()
    wait_drained(srv)
    check_bucket_matches(srv, s3_server, prefix)
    assert len(srv.stored("bulk")) == acked


def test_kill_between_upload_and_manifest_record(server_factory, s3_server, proxy):
    srv, prefix = start(server_factory, s3_server, proxy,
                        extra={"HODEI_FAILPOINT": "replicator_after_upload"})
    acked = append(srv, ["acme"], 3000)
    hodei.wait_until(lambda: not srv.running(), 120, "the failpoint aborted the server")
    srv.expect_dead = True
    uploaded = bucket_versions(s3_server, s3server.VERSIONED, prefix)
    assert uploaded, "the failpoint fired before any upload"
    del srv.env["HODEI_FAILPOINT"]
    srv.start()
    wait_drained(srv)
    check_bucket_matches(srv, s3_server, prefix)
    assert srv.metrics().get("hodei_replication_reused_total") >= 1
    assert len(srv.stored("acme")) == acked["acme"]


def test_kill9_in_the_middle_of_an_upload(server_factory, s3_server, proxy):
    """kill -9 of hodei-auditd while a multipart upload is on the wire: after
    the restart every segment is in the bucket once, and the manifest agrees
    with the bucket (an unfinished multipart upload is not an object)."""
    srv, prefix = start(server_factory, s3_server, proxy,
                        args=["--seal-rows", "40000", "--seal-age", "1h"],
                        extra={"HODEI_S3_MULTIPART_THRESHOLD": "5MiB", "HODEI_S3_PART_SIZE": "5MiB"})
    acked = big_segments(srv, proxy)
    before = proxy.sent_to_server
    proxy.throttle(4 << 20)  # an upload lasts seconds: the kill lands inside it
    proxy.up()
    hodei.wait_until(lambda: proxy.sent_to_server - before >= 3 << 20, 120,
                     "an upload under way", interval_s=0.001)
    srv.kill()
    proxy.throttle(None)
    assert bucket_versions(s3_server, s3server.VERSIONED, prefix) == {}, \
        "the first segment finished before the kill: the test did not cut an upload"
    srv.start()
    wait_drained(srv)
    check_bucket_matches(srv, s3_server, prefix)
    assert len(srv.stored("bulk")) == acked


def test_retention_zero_search_reads_from_s3(server_factory, s3_server, proxy):
    """With local retention 0, replicated segments leave the local disk, and
    Search and Verify still answer for their events, reading them back from
    S3 (also after a restart, with an empty segments folder)."""
    srv, prefix = start(server_factory, s3_server, proxy, args=["--local-retention", "0s"])
    acked = append(srv, ["acme", "globex"], 5000)
    hodei.wait_until(lambda: (m := srv.metrics()).get("hodei_memtable_events") == 0
                     and m.get("hodei_segments_remote") > 0
                     and m.get("hodei_segments_local") == 0,
                     180, "every segment replicated and removed locally")
    assert not list(Path(srv.data_dir).glob("shard-*/segments/*.hseg")), "local files remain"
    for round_ in ("after retention", "after a restart"):
        for t, n in acked.items():
            got = srv.stored(t)
            assert [e.seq for e in got] == list(range(1, n + 1)), round_
            v = srv.verify(t)
            assert v.ok and v.events_checked == n, (round_, v.problem)
        assert srv.metrics().get("hodei_remote_fetches_total") > 0
        if round_ == "after a restart":
            break
        srv.stop()
        for f in Path(srv.data_dir).glob("shard-*/cache/*"):
            f.unlink()
        srv.start()
    # S3 unreachable: a read that needs a segment not cached fails with
    # UNAVAILABLE (retry), never with wrong or partial data.
    srv.stop()
    for f in Path(srv.data_dir).glob("shard-*/cache/*"):
        f.unlink()
    proxy.down()
    srv.start()
    import grpc
    with pytest.raises(grpc.RpcError) as e:
        srv.stored("acme")
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    proxy.up()

    # A read back that started before S3 came back may still fail, and a
    # search that needs it says UNAVAILABLE: a client retries, as here.
    def stored_once_reachable():
        try:
            return srv.stored("acme")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            return None

    got = hodei.wait_until(stored_once_reachable, 30, "a search once S3 is back", 0.1)
    assert len(got) == acked["acme"]
