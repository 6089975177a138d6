"""Operations: what /metrics, /health and the state log cost on a store with messages in every state.

Prints `name: value` lines; ratios are against a baseline measured in the same run:
- metrics_scrape_ms (one /metrics exposition) against stats_ms (the one `SELECT state, COUNT(*)` a
  `hub queue stats` makes): what the ages, certificates and text format add;
- health_ms (one /health verdict);
- log_state_us (one state-change line, JSON, to memory) against log_state_off_us (the same call with
  INFO off, as in production without -v): what -v costs per step.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
from pathlib import Path

from hub import logs
from hub.metrics import health
from hub.relay.lifecycle import Event
from hub.relay.server import Relay, RelayConfig
from hub.store import ErrorInfo, MessageMeta

N = 5000
REPEAT = 50


def _best(fn, n: int = REPEAT) -> float:  # noqa: ANN001 - a no-argument callable
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        home = Path(d)
        (home / "register.toml").write_text('[[party]]\nher_id = 80000\nname = "R"\nlocal = true\n')
        relay = Relay(RelayConfig.from_dict({"her_id": 80000, "register": ["register.toml"]}, home))
        st = relay.store
        meta = MessageMeta(msg_type="DIALOG_NOTAT", sender_her="82001", receiver_her="81002")
        for i in range(N):  # a quarter each: received, queued, sending, undelivered
            m = st.put_received(b"<MsgHead/>", meta)
            if i % 4 == 0:
                continue
            st.transition(m.id, Event.VALIDATED)
            if i % 4 == 1:
                continue
            st.transition(m.id, Event.CLAIM)
            if i % 4 == 3:
                st.record_failure(m.id, ErrorInfo("smtp.550", "mailbox unavailable", True), actor="bench")
        stats = _best(st.stats)
        scrape = _best(relay.metrics.exposition)
        check = _best(lambda: health(relay))
        print(f"ops_messages: {N}")
        print(f"stats_ms: {stats * 1000:.2f}")
        print(f"metrics_scrape_ms: {scrape * 1000:.2f}")
        print(f"metrics_scrape_vs_stats: {scrape / stats:.1f}")
        print(f"health_ms: {check * 1000:.2f}")
        sample = st.list_messages(limit=1)[0]
        logs.setup("warning", "json", io.StringIO())
        k = 2000
        off = _best(lambda: [logs.log_state("queued", sample, "routed") for _ in range(k)], 5) / k
        logs.setup("info", "json", io.StringIO())
        on = _best(lambda: [logs.log_state("queued", sample, "routed") for _ in range(k)], 5) / k
        logging.getLogger().setLevel(logging.WARNING)
        print(f"log_state_off_us: {off * 1e6:.2f}")
        print(f"log_state_us: {on * 1e6:.2f}")
        print(f"log_state_vs_off: {on / off:.1f}")
        relay.store.close()


if __name__ == "__main__":
    main()
