# SPDX-License-Identifier: Apache-2.0
"""Pins this suite's own chain recomputation (hodei.canonical) to the
engine: a data directory written by the real engine (tests/hodei_make_data)
is decoded here from its WAL (docs/FORMAT.md §4), each canonical event is
rebuilt from its decoded fields bit for bit, and the chain recomputed over
them equals every segment's chain_after as `hodei-audit inspect` reports it.
Without this, a wrong recomputation could make the RPC tests fail (or pass)
for the wrong reason."""
import hashlib
import json
import struct
import subprocess

import pytest

import hodei

MAKE_DATA = hodei.BUILD_DIR / "tests" / "hodei_make_data"


def decode_canonical(b):
    a = hodei.pb().audit_pb2
    assert b[0] == 1, "canonical version"
    t = b[1]
    p = 2
    tenant = b[p:p + t].decode()
    p += t
    seq, received = struct.unpack_from("<Qq", b, p)
    p += 16
    eid = b[p:p + 16]
    p += 16
    occurred, outcome = struct.unpack_from("<qB", b, p)
    p += 9

    def take():
        nonlocal p
        (n,) = struct.unpack_from("<I", b, p)
        p += 4
        v = b[p:p + n]
        p += n
        return v

    strs = {f: take().decode() for f in hodei.STRING_FIELDS}
    (count,) = struct.unpack_from("<I", b, p)
    p += 4
    attrs = [(take().decode(), take().decode()) for _ in range(count)]
    details = take()
    assert p == len(b), "bytes after details_json"
    ev = a.AuditEvent(event_id=eid, occurred_at_ns=occurred, outcome=outcome,
                      details_json=details, **strs)
    for k, v in attrs:
        ev.attributes.add(key=k, value=v)
    return a.StoredEvent(event=ev, tenant_id=tenant, seq=seq, received_at_ns=received)


def wal_events(path):
    """The events of a WAL file's records, up to where the CLI's scan says
    they end: a recycled file holds its previous life's bytes after them."""
    data = path.read_bytes()
    info = subprocess.run([str(hodei.CLI), "inspect", str(path), "--json"],
                          capture_output=True, timeout=60, check=True)
    end = json.loads(info.stdout)["valid_end"]
    p, out = 64, []
    while p + 32 <= end:
        plen, kind, count, _seq = struct.unpack_from("<IHHQ", data, p)
        if plen == 0 and kind == 0:
            break
        assert kind == 1
        q = p + 32
        for _ in range(count):
            (n,) = struct.unpack_from("<I", data, q)
            raw = data[q + 4:q + 4 + n]
            q += 4 + n
            out.append((raw, decode_canonical(raw)))
        p += 32 + plen
    return out


def test_python_chain_matches_engine(tmp_path):
    if not MAKE_DATA.exists():
        pytest.skip(f"{MAKE_DATA} not built")
    d = tmp_path / "data"
    subprocess.run([str(MAKE_DATA), str(d)], check=True, capture_output=True, timeout=300)
    events = {}
    for wal in sorted(d.glob("shard-*/wal/*.log")):
        for raw, se in wal_events(wal):
            assert hodei.canonical(se) == raw, f"seq {se.seq}: re-encoding differs from the engine's"
            events.setdefault(se.tenant_id, {})[se.seq] = se
    assert events, "no events in the WAL"
    chains = {}
    for t, by_seq in events.items():
        chain = hodei.ZERO_CHAIN
        for seq in sorted(by_seq):
            chain = hashlib.sha256(chain + hashlib.sha256(hodei.canonical(by_seq[seq])).digest()).digest()
            chains[(t, seq)] = chain.hex()
    checked = 0
    for seg in sorted(d.glob("shard-*/segments/*.hseg")):
        p = subprocess.run([str(hodei.CLI), "inspect", str(seg), "--json"],
                           capture_output=True, timeout=60)
        info = json.loads(p.stdout)
        key = (info["tenant"], info["last_seq"])
        if key in chains:
            assert chains[key] == info["chain_after"], f"{seg.name}: chain_after differs"
            checked += 1
    assert checked > 0, "no segment's events were in the WAL to compare"
