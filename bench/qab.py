#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""bench/qab.py — the query benchmark's A/B: two (or more) settings of
hodei-auditd, alternated round by round on one query store, for the
before/after query figures of docs/PERFORMANCE.md.

The store is one that `bench/harness.py --only queries --keep --work DIR`
left in DIR (DIR/store and DIR/plan.json). Each round starts a fresh
hodei-auditd per setting on that store (after reading its segment files
once, as the harness does), waits until it is idle, runs the plan with
hodei-bench-query, and prints each query kind's p99. The order of the
settings flips every round. At the end: the median p99 per kind and
setting; --out writes every round's figures as JSON.

    bench/harness.py --only queries --no-clickhouse --keep --work /var/tmp/qs
    bench/qab.py --work /var/tmp/qs --rounds 4 base= slices=--thread-slice=200us

A setting is NAME=FLAG,FLAG,... (server flags; empty: the defaults), or
NAME@DIR=FLAG,... to read the store of another work directory DIR: two
stores of the same seeded events written two ways (harness.py
--fill-flags) then compare as two settings, with the same plan (--work's).

    bench/harness.py --only queries --no-clickhouse --keep --work /var/tmp/b256 \
        --fill-flags=--block-rows=256
    bench/qab.py --work /var/tmp/qs --rounds 6 b512= b256@/var/tmp/b256=
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402  (its Hodei server wrapper, warm() and paths)


def setting(text):
    name, sep, flags = text.partition("=")
    name, _, store = name.partition("@")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"want NAME[@DIR]=FLAG,FLAG,...: {text!r}")
    return name, [f for f in flags.split(",") if f], Path(store) if store else None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, type=Path,
                   help="a harness work directory kept with --keep")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--out", type=Path, help="every round's p99s (JSON)")
    p.add_argument("settings", nargs="+", type=setting)
    args = p.parse_args()
    plan = args.work / "plan.json"
    if not plan.exists() or not (args.work / "store").is_dir():
        sys.exit(f"qab.py: {args.work} has no plan.json and store/ "
                 "(bench/harness.py --only queries --keep --work DIR makes them)")
    # The harness's store settings: age seals only, as while it was filled.
    store_args = ["--seal-age", "50s"]
    for name, _, work in args.settings:
        if work and not (work / "store").is_dir():
            sys.exit(f"qab.py: setting {name}: {work} has no store/")
    p99s = {name: [] for name, _, _ in args.settings}
    for r in range(args.rounds):
        for name, flags, work in (args.settings if r % 2 == 0 else args.settings[::-1]):
            store = (work or args.work) / "store"
            harness.warm(store / "data", "shard-*/segments")
            with harness.Hodei(store, store_args + flags) as h:
                h.quiesce()
                j = harness.run_json([harness.QUERY, "run", "--plan", plan,
                                      "--target", h.target, "--key", h.key])
            kinds = {k: v["p99_us"] / 1000 for k, v in j.get("queries", {}).items()
                     if isinstance(v, dict) and v.get("p99_us") is not None}
            p99s[name].append(kinds)
            print(f"round {r} {name}: p99 ms " +
                  ", ".join(f"{k} {v:.2f}" for k, v in sorted(kinds.items())), flush=True)
    for name, rounds in p99s.items():
        kinds = sorted(set().union(*rounds))
        print(f"{name}: median p99 ms " + ", ".join(
            f"{k} {statistics.median(x[k] for x in rounds if k in x):.2f}" for k in kinds))
    if args.out:
        settings = {name: {"flags": flags, "work": str(work or args.work)}
                    for name, flags, work in args.settings}
        args.out.write_text(json.dumps({"settings": settings, "p99_ms": p99s},
                                       indent=1) + "\n")


if __name__ == "__main__":
    main()
