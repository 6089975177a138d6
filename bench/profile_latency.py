"""Where a relayed message's latency goes: bench_relay's network run (two relays over SMTP, the latency
run at half the throughput rate) with per-stage timestamps in both relays (bench/latency_trace.py).

    python -m bench.profile_latency [sqlite|postgres] [--processes N] [--slowest K]

Prints `latency_<stage>_p50_ms` / `_p99_ms` / `_max_ms` lines over the latency run's messages, the
breakdown of the K slowest, and the GC pauses of each relay's process during that run. Stages, in order:
  a_store      hand-over at the GP's relay -> its put_received committed
  a_wake       -> its worker's admit starts (dispatch wake-up, pool hand-over)
  a_check      -> the verdict's commit starts (validation, routing, sign + encrypt)
  a_commit     the verdict + claim commit
  a_to_send    -> the SMTP send starts
  smtp         -> the hospital's relay starts storing it (SMTP session, DATA)
  b_store      -> stored there (seen look-ups, put_received)
  b_wake       -> its worker's admit starts
  b_check      -> its verdict's commit starts (unwrap: signature, decrypt; validation)
  b_commit     the verdict + claim commit
  b_folder     -> written into the folder (fsynced)
  b_ack_commit -> the delivered commit (the bench's "written" time is its tap, just after)
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import sys
import tempfile
from pathlib import Path

from bench import bench_relay, latency_trace, pg_url

STAGES = ["a_store", "a_wake", "a_check", "a_commit", "a_to_send", "smtp", "b_store", "b_wake", "b_check",
          "b_commit", "b_folder", "b_ack_commit"]


def _by_id(events: list[list]) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for mid, stage, t in events:
        out.setdefault(mid, {}).setdefault(stage, []).append(t)
    return out


def chains(a: dict, b: dict) -> list[dict[str, float]]:
    ea, eb = _by_id(a["events"]), _by_id(b["events"])
    a_out = {mid: ebx for mid, ebx in a["links"]}
    b_in = {ebx: mid for mid, ebx in b["links"]}
    rows = []
    for mid, st in ea.items():
        if "handover" not in st or mid not in a_out or a_out[mid] not in b_in:
            continue
        bs = eb.get(b_in[a_out[mid]], {})
        try:
            t = [st["handover"][0], st["stored"][0], st["admit"][0], st["advance0"][0], st["advance1"][0],
                 st["send0"][0], bs["take0"][0], bs["stored"][0], bs["admit"][0], bs["advance0"][0],
                 bs["advance1"][0], bs["folder1"][0], bs["advance1"][1]]
        except (KeyError, IndexError):
            continue
        row = {s: (t[i + 1] - t[i]) * 1000 for i, s in enumerate(STAGES)}
        row["total"] = (t[-1] - t[0]) * 1000
        row["t0"] = t[0]
        row["t_end"] = t[-1]
        if "prepare1" in st:
            row["a_prepare"] = (st["prepare1"][0] - st["prepare0"][0]) * 1000
        if "unwrap1" in bs:
            row["b_unwrap"] = (bs["unwrap1"][0] - bs["unwrap0"][0]) * 1000
        rows.append(row)
    return sorted(rows, key=lambda r: r["t0"])


def main(argv: list[str]) -> int:
    backend = argv[0] if argv and not argv[0].startswith("-") else "postgres"
    processes = int(argv[argv.index("--processes") + 1]) if "--processes" in argv else 1
    slowest = int(argv[argv.index("--slowest") + 1]) if "--slowest" in argv else 5
    pg = pg_url()
    if pg is None and backend != "sqlite":
        raise SystemExit("HUB_BENCH_PG is empty: name sqlite, or a PostgreSQL server")
    schemas = [f"bench_lat_{secrets.token_hex(4)}" for _ in range(2)]
    latency_trace.install()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "net"
        home.mkdir()
        trace_b = Path(tmp) / "trace-b.json"
        os.environ["HUB_BENCH_TRACE"] = str(trace_b)
        stores = None if backend == "sqlite" else {"a": f"{pg}?schema={schemas[0]}",
                                                   "b": f"{pg}?schema={schemas[1]}"}
        try:
            r = bench_relay.run_network(home, stores, processes=processes)
        finally:
            if backend == "postgres":
                import psycopg

                with psycopg.connect(pg, autocommit=True) as c:
                    for s in schemas:
                        c.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
        a = {"events": latency_trace.events, "links": latency_trace.links, "gcs": latency_trace.gcs,
             "stmts": latency_trace.stmts}
        b = json.loads(trace_b.read_text())
    print(f"bench_p50_ms: {r['p50_ms']:.1f}\nbench_p99_ms: {r['p99_ms']:.1f}  "
          f"(at {r['latency_load_msgs_per_s']:.0f} msgs/s)")
    rows = chains(a, b)
    n_lat = max(20, bench_relay.N_NET // 2)
    lat = rows[-n_lat:]  # the latency run: the last messages handed over
    print(f"# {len(lat)} messages of the latency run traced")
    for s in [*STAGES, "a_prepare", "b_unwrap", "total"]:
        xs = sorted(x[s] for x in lat if s in x)
        if xs:
            p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
            print(f"latency_{s}_ms: p50 {statistics.median(xs):.2f}  p99 {p99:.2f}  max {xs[-1]:.2f}  "
                  f"mean {statistics.fmean(xs):.2f}")
    t_lo, t_hi = lat[0]["t0"], max(x["t_end"] for x in lat)
    for who, d in (("a", a), ("b", b)):
        g = [(t, s, gen) for t, s, gen in d["gcs"] if t_lo <= t <= t_hi]
        longest = max((s for _t, s, _g in g), default=0) * 1000
        print(f"gc_{who}: {len(g)} collections, {sum(s for _t, s, _g in g) * 1000:.1f} ms in all, longest "
              f"{longest:.2f} ms, gen2 {sum(1 for x in g if x[2] == 2)}")
    for who, d in (("a", a), ("b", b)):
        for k, xs in sorted(d.get("stmts", {}).items(), key=lambda kv: -sum(kv[1])):
            xs = sorted(xs)
            print(f"stmt_{who} {k!r}: n {len(xs)}  p50 {statistics.median(xs) * 1000:.2f}  "
                  f"p99 {xs[int(len(xs) * 0.99)] * 1000:.2f}  sum {sum(xs):.2f} s")
    for x in sorted(lat, key=lambda r: -r["total"])[:slowest]:
        parts = "  ".join(f"{s}={x[s]:.1f}" for s in STAGES)
        overlap = [f"{w}:gen{gen} {s * 1000:.1f}ms" for w, d in (("a", a), ("b", b))
                   for t, s, gen in d["gcs"] if x["t0"] <= t <= x["t_end"] and s > 0.001]
        print(f"slow {x['total']:.1f} ms: {parts}" + (f"  gc[{', '.join(overlap)}]" if overlap else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
