"""One test PKI per process, with its CRL served on loopback: for this area's tests and anyone else's.

    from hub.security.testing import shared_test_pki
    env = shared_test_pki()          # created on first call (~1-2 s of RSA key generation), then reused
    gp = load_identity(env.dir, "gp")

The PKI lives in a temporary folder removed at exit; the CRL server runs until the process ends.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from hub.security.pki import CrlServer, PartySpec, PkiLayout, init_pki, serve_crl

TEST_PARTIES = [
    PartySpec("gp", "82001", "921543018", "Legekontoret Fjordbyen"),
    PartySpec("lab", "83001", "918773207", "Fjordlab AS"),
    PartySpec("hub", "80001", "998877660", "Meldingshub"),
]


@dataclass(frozen=True)
class TestPki:
    dir: Path
    layout: PkiLayout
    crl: CrlServer


_lock = threading.Lock()
_env: TestPki | None = None


def shared_test_pki() -> TestPki:
    global _env
    with _lock:
        if _env is None:
            d = Path(tempfile.mkdtemp(prefix="hub-test-pki-"))
            stack = contextlib.ExitStack()
            srv = stack.enter_context(serve_crl(d))
            lay = init_pki(d, TEST_PARTIES, crl_url=srv.url)
            atexit.register(shutil.rmtree, d, True)
            atexit.register(stack.close)  # runs first (LIFO): stop serving before removing the files
            _env = TestPki(d, lay, srv)
        return _env
