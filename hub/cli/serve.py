"""`hub serve`: run the relay (or its demo with simulated GP, hospital, lab and nursing-home systems)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from hub.cli.common import err_console, fail


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        config: Path = typer.Option(None, "--config", "-c", help="The relay's hub.toml (see docs/relay.md)."),
        demo: bool = typer.Option(False, "--demo", help="Run the demo under $HUB_HOME/demo (created on "
                                  "first start) with simulated systems, shown live."),
        duration: float = typer.Option(None, "--duration", min=0.1,
                                       help="Stop by itself after this many seconds."),
        node: str = typer.Option(None, "--node", help="This node's name (leases, timelines); overrides "
                                 "the config. Several nodes may share one PostgreSQL store."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every step to stderr."),
    ) -> None:
        """Run the relay until Ctrl-C / SIGTERM (or --duration): intake, checks, routing, delivery."""
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from hub.relay import demo as demo_mod
        from hub.relay.server import ConfigError, Relay, RelayConfig

        if demo:
            # the demo builds its relays itself: the hospital's relay beside this one, over SMTP
            try:
                demo_mod.create(config).run(duration)
            except ConfigError as exc:
                fail(str(exc))
            return
        if config is None:
            fail("give --config hub.toml, or --demo")
            return
        else:
            path = config
        try:
            cfg = RelayConfig.load(path)
        except ConfigError as exc:
            fail(str(exc))
            return
        if node:
            cfg.node = cfg.worker.node = node
        relay = Relay(cfg)
        if relay.http is not None:
            host, port = relay.http.address
            err_console.print(f"submit API and ebXML endpoint on http://{host}:{port}")
        err_console.print(f"relay node {cfg.node} running (store {cfg.store}); Ctrl-C stops")
        relay.run(duration)
        err_console.print("relay stopped")
