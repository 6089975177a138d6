"""`hub serve`: run the relay (or its demo with simulated GP, hospital, lab and nursing-home systems)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import typer

from hub import config as config_mod
from hub import logs
from hub.cli.common import ConfigOpt, fail, root_config


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        config: Path = ConfigOpt,
        demo: bool = typer.Option(False, "--demo", help="Run the demo under $HUB_HOME/demo (created on "
                                  "first start) with simulated systems, shown live."),
        duration: float = typer.Option(None, "--duration", min=0.1,
                                       help="Stop by itself after this many seconds."),
        node: str = typer.Option(None, "--node", help="This node's name (leases, timelines); overrides "
                                 "the config. Several nodes may share one PostgreSQL store."),
        processes: int = typer.Option(None, "--processes", min=1, max=64,
                                      help="Processes sharing this node's work over its store: this one "
                                      "(listeners, intake) and N-1 workers it starts and restarts; "
                                      "overrides worker.processes."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every state change (INFO) to "
                                     "stderr; without it only what needs attention (WARNING)."),
        log_format: Literal["text", "json"] = typer.Option(
            None, "--log-format", help="text (default) or json: one JSON object a line."),
    ) -> None:
        """Run the relay until Ctrl-C / SIGTERM (or --duration): intake, checks, routing, delivery."""
        logs.setup("info" if verbose else "warning", log_format or "text")
        from hub.relay import demo as demo_mod
        from hub.relay.server import ConfigError, Relay, RelayConfig

        if demo:
            # the demo builds its relays itself: the hospital's relay beside this one, over SMTP
            try:
                demo_mod.create(config).run(duration)
            except ConfigError as exc:
                fail(str(exc))
            return
        try:
            path = config_mod.find(config or root_config())
        except ConfigError as exc:
            fail(str(exc))
            return
        if path is None:
            fail(f"no hub.toml: give --config FILE (or set {config_mod.CONFIG_ENV}), or --demo")
            return
        try:
            cfg = RelayConfig.load(path)
        except ConfigError as exc:
            fail(str(exc))
            return
        if cfg.settings is not None:  # the config's [log], unless the command line says otherwise
            logs.setup("info" if verbose else cfg.settings.log.level, log_format or cfg.settings.log.format)
        if node:
            cfg.node = cfg.worker.node = node
        if processes:
            cfg.worker.processes = processes
        relay = Relay(cfg)
        # start and stop are said whatever the level, in the log's own format (JSON lines stay JSON)
        say = logging.getLogger("hub.serve")
        say.setLevel(logging.INFO)
        if relay.http is not None:
            say.info("submit API, ebXML endpoint, /health and /metrics on %s", relay.http.url())
        say.info("relay node %s running; config %s; store %s; Ctrl-C stops", cfg.node, path,
                 config_mod.redact(cfg.store))
        relay.run(duration)
        say.info("relay stopped")
