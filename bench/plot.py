#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""bench/plot.py RESULTS.json OUT.png — draws one benchmark run (written by
bench/harness.py): ingest throughput and ack latency against offered load,
with ClickHouse's best insert rate of the same run, and the p99 of every
query for both systems. Missing parts of a run are left out of the plot."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def legend(ax):
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py RESULTS.json OUT.png")
    r = json.load(open(sys.argv[1]))
    fig, (ax_t, ax_l, ax_q) = plt.subplots(1, 3, figsize=(16, 5))
    fig.suptitle(f"hodei-audit {r.get('commit', '')} vs ClickHouse 18.16 — {r.get('date', '')}, "
                 f"{r.get('machine', {}).get('cores', '?')} cores, load generator on the same machine")

    ing = r.get("ingest") or {}
    sweep = (ing.get("hodei") or {}).get("sweep") or []
    offered = [s["offered_eps"] / 1000 for s in sweep if s.get("offered_eps")]
    got = [s["eps"] / 1000 for s in sweep if s.get("offered_eps")]
    if offered:
        ax_t.plot(offered, got, "o-", label="hodei-audit, acked (fsync'd)")
        ax_t.plot(offered, offered, ":", color="grey", label="offered")
    top = (ing.get("hodei") or {}).get("max_median_eps")
    if top:
        ax_t.axhline(top / 1000, color="C0", linestyle="--", label="hodei-audit max (median)")
    ch = (ing.get("clickhouse") or {}).get("best")
    if ch:
        ax_t.axhline(ch["events_per_s"] / 1000, color="C3", linestyle="--",
                     label=f"ClickHouse best insert ({ch['format']}, {ch['clients']} client(s))")
    ax_t.set_xlabel("offered load, thousand events/s")
    ax_t.set_ylabel("thousand events/s")
    ax_t.set_title("ingest throughput")
    legend(ax_t)
    ax_t.grid(alpha=0.3)

    if offered:
        for key, label in (("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9")):
            ys = [s[key] / 1000 if s.get(key) is not None else None for s in sweep if s.get("offered_eps")]
            ax_l.plot(offered, ys, "o-", label=label)
        ax_l.axhline(5, color="grey", linestyle=":", label="p99 target at half max (5 ms)")
        ax_l.set_yscale("log")
    ax_l.set_xlabel("offered load, thousand events/s")
    ax_l.set_ylabel("ack latency, ms (log)")
    ax_l.set_title("hodei-audit ack latency (open loop)")
    legend(ax_l)
    ax_l.grid(alpha=0.3, which="both")

    q = r.get("queries") or {}
    hq = (q.get("hodei") or {}).get("queries") or {}
    cq = (q.get("clickhouse") or {}).get("queries") or {}
    names = [n for n in ("Q1", "Q1top", "Q2", "Q3", "Q4", "Q5") if n in hq or n in cq]
    if names:
        xs = range(len(names))
        w = 0.4
        hv = [((hq.get(n) or {}).get("p99_us") or 0) / 1000 for n in names]
        cv = [((cq.get(n) or {}).get("p99_us") or 0) / 1000 for n in names]
        ax_q.bar([x - w / 2 for x in xs], hv, w, label="hodei-audit")
        ax_q.bar([x + w / 2 for x in xs], cv, w, label="ClickHouse 18.16", color="C3")
        ax_q.set_xticks(list(xs))
        ax_q.set_xticklabels(names)
        ax_q.set_yscale("log")
    ax_q.set_ylabel("p99 latency, ms (log)")
    ax_q.set_title(f"queries over {q.get('events', 0):,} events")
    legend(ax_q)
    ax_q.grid(alpha=0.3, axis="y", which="both")

    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)


if __name__ == "__main__":
    main()
