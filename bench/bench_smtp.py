"""The relay's SMTP listener under 1 MB mails: resident memory before and after (issue 14: it grew
79 -> 477 MB over 300 mails, every mail kept), and mails per second stored.

The relay runs in a child process (its RSS is what is measured); this process sends N mails of 1 MB
(a MIME package whose SOAP part is not XML: each is stored, recorded as rejected at once and, sent with
an empty MAIL FROM, answered to nobody) over one SMTP session on loopback.

Prints `name: value` lines: `smtp_rss_mb_before`, `smtp_rss_mb_after`, `smtp_rss_growth_mb`,
`smtp_mails_per_s`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N = int(os.environ.get("HUB_BENCH_N_SMTP", "300"))
MAIL_BYTES = 1024 * 1024
ADDR = "edi@bench.test"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve(home: Path) -> int:
    """Child: the relay; prints `ready`, then its RSS for each line read from stdin; stops at EOF."""
    from hub.relay.server import Relay, RelayConfig

    relay = Relay(RelayConfig.from_dict(json.loads((home / "config.json").read_text()), home))
    relay.start()
    try:
        print("ready", flush=True)
        for _ in sys.stdin:
            print(f"{rss_mb():.1f}", flush=True)
    finally:
        relay.stop()
    return 0


def mail(i: int) -> bytes:
    payload = base64.encodebytes(os.urandom(MAIL_BYTES * 3 // 4))
    return (b"MIME-Version: 1.0\r\nContent-Type: multipart/related; boundary=b; type=\"text/xml\"\r\n\r\n"
            b"--b\r\nContent-Type: text/xml\r\n\r\nnot XML " + str(i).encode() + b"\r\n"
            b"--b\r\nContent-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + payload + b"\r\n--b--\r\n")


async def send_all(port: int) -> float:
    import aiosmtplib

    mails = [mail(i) for i in range(8)]  # made once: the sender's memory is not what is measured
    start = time.perf_counter()
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=120) as c:
        for i in range(N):
            await c.sendmail("", [ADDR], mails[i % len(mails)])
    return time.perf_counter() - start


def main() -> int:
    from hub.security.testing import shared_test_pki

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "register.toml").write_text('[[party]]\nher_id = 81000\nname = "Relay"\nlocal = true\n')
        (home / "config.json").write_text(json.dumps({
            "store": "sqlite:///hub.sqlite", "her_id": 81000, "node": "bench-smtp",
            "register": ["register.toml"],
            "pki": str(shared_test_pki().dir), "identity": "lab",
            "smtp": {"listen": f"127.0.0.1:{port}", "addresses": [ADDR], "max_bytes": 4 * MAIL_BYTES},
            "folders": {"root": "spool", "poll": 3600}, "worker": {"threads": 2},
        }))
        child = subprocess.Popen([sys.executable, "-m", "bench.bench_smtp", "serve", str(home)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 cwd=Path(__file__).resolve().parent.parent)
        assert child.stdin is not None and child.stdout is not None
        try:
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("the relay did not start")

            def rss() -> float:
                child.stdin.write("rss\n")  # type: ignore[union-attr]
                child.stdin.flush()  # type: ignore[union-attr]
                return float(child.stdout.readline())  # type: ignore[union-attr]

            before = rss()
            took = asyncio.run(send_all(port))
            time.sleep(1.0)  # the worker's last admits
            after = rss()
        finally:
            child.stdin.close()
            child.wait(60)
    print(f"smtp_rss_mb_before: {before:.0f}")
    print(f"smtp_rss_mb_after: {after:.0f}  (after {N} mails of 1 MB)")
    print(f"smtp_rss_growth_mb: {after - before:.0f}")
    print(f"smtp_mails_per_s: {N / took:.1f}  (1 MB each, stored before the 250)", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "serve":
        sys.exit(serve(Path(sys.argv[2])))
    sys.exit(main())
