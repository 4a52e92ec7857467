#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""bench/plot.py RESULTS.json OUT.png — draws one benchmark run (written by
bench/harness.py): for both systems, ingest throughput (achieved against
offered, and each one's closed-loop best) and open-loop latency against
offered load — hodei-audit's ack latency per request, ClickHouse's latency
per batch of 10,000 rows, both from the due time — and the p99 of every
query. Missing parts of a run (e.g. a run without the ClickHouse sweep) are
left out of the plot."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def legend(ax, size=8):
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=size)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py RESULTS.json OUT.png")
    r = json.load(open(sys.argv[1]))
    fig, (ax_t, ax_l, ax_q) = plt.subplots(1, 3, figsize=(16, 5))
    fig.suptitle(f"hodei-audit {r.get('commit', '')} vs ClickHouse 18.16 — {r.get('date', '')}, "
                 f"{r.get('machine', {}).get('cores', '?')} cores, load generator on the same machine")

    ing = r.get("ingest") or {}
    sweep = [s for s in (ing.get("hodei") or {}).get("sweep") or [] if s.get("offered_eps")]
    chr_ = ing.get("clickhouse") or {}
    ch_sweep = [s for s in chr_.get("sweep") or [] if s.get("offered_eps")]
    offered = [s["offered_eps"] / 1000 for s in sweep]
    ch_offered = [s["offered_eps"] / 1000 for s in ch_sweep]
    if offered:
        ax_t.plot(offered, [s["eps"] / 1000 for s in sweep], "o-", color="C0",
                  label="hodei-audit, acked (fsync'd)")
    if ch_offered:
        ax_t.plot(ch_offered, [s["eps"] / 1000 for s in ch_sweep], "s-", color="C3",
                  label="ClickHouse, inserted (open loop)")
    if offered or ch_offered:
        lim = max(offered + ch_offered)
        ax_t.plot([0, lim], [0, lim], ":", color="grey", label="offered")
    top = (ing.get("hodei") or {}).get("max_median_eps")
    if top:
        ax_t.axhline(top / 1000, color="C0", linestyle="--", label="hodei-audit max (median)")
    ch = chr_.get("best")
    if ch:
        ax_t.axhline(ch["events_per_s"] / 1000, color="C3", linestyle="--",
                     label=f"ClickHouse best insert ({ch['format']}, {ch['clients']} client(s))")
    ax_t.set_xlabel("offered load, thousand events/s")
    ax_t.set_ylabel("thousand events/s")
    ax_t.set_title("ingest throughput")
    legend(ax_t)
    ax_t.grid(alpha=0.3)

    pcts = (("p50_us", "p50", "o", "-"), ("p99_us", "p99", "^", "--"),
            ("p999_us", "p99.9", "v", ":"))
    for pts, xs, color, who in ((sweep, offered, "C0", "hodei-audit ack (100 events)"),
                                (ch_sweep, ch_offered, "C3", "ClickHouse batch (10k rows)")):
        for key, label, marker, style in pcts:
            ys = [s[key] / 1000 if s.get(key) is not None else None for s in pts]
            if xs:
                ax_l.plot(xs, ys, marker=marker, linestyle=style, color=color,
                          label=f"{who} {label}")
    if offered:
        ax_l.axhline(5, color="grey", linestyle=":", label="p99 target at half max (5 ms)")
    if offered or ch_offered:
        ax_l.set_yscale("log")
    ax_l.set_xlabel("offered load, thousand events/s")
    ax_l.set_ylabel("latency from due time, ms (log)")
    ax_l.set_title("latency vs offered load (open loop)")
    legend(ax_l, 7)
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
