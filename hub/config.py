"""The hub's configuration: one `hub.toml` read by every command, validated by pydantic-settings.

Which file (the first that applies):
  1. `--config FILE` on the command line;
  2. the environment variable `HUB_CONFIG`;
  3. `./hub.toml` in the current folder;
  4. `$HUB_HOME/hub.toml` (HUB_HOME defaults to `./var`).
Without any of them the commands use built-in defaults under HUB_HOME (store `HUB_HOME/hub.sqlite`,
register `HUB_HOME/register.toml`) and say so. A file given with --config or HUB_CONFIG must exist.

Unknown keys and values of the wrong type are errors that name the key (`worker.network_retrys:
unknown key; did you mean network_retries?`). Relative paths in the file are relative to its folder.
Environment variables `HUB_<KEY>` (nested: `HUB_WORKER__THREADS`) override the file's values.
The full key reference is docs/configuration.md; its example is parsed by a test.

HUB_HOME also holds `settings.json`, where `hub schemas add` records schema packs (not configuration).
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

CONFIG_ENV = "HUB_CONFIG"
FILE_NAME = "hub.toml"
APPREC_LIMIT_S = 96 * 3600  # HIS 1213: an AppRec is expected within 96 hours


class ConfigError(ValueError):
    """A configuration that cannot be used; the text names the file and the key."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [message]  # one line per problem, each naming its key


def home() -> Path:
    return Path(os.environ.get("HUB_HOME", "var"))


# --- settings.json: what `hub schemas add` records (not configuration) ------------------------------

def settings_path() -> Path:
    return home() / "settings.json"


def load_settings() -> dict[str, Any]:
    p = settings_path()
    if not p.exists():
        return {}
    return json.loads(p.read_text(encoding="utf-8"))


def save_settings(settings: dict[str, Any]) -> None:
    p = settings_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(settings, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(p)  # atomic: a crash never leaves half a settings file


# --- the schema of hub.toml ------------------------------------------------------------------------

def _host_port(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected host:port (127.0.0.1:2525), got {text!r}")
    return text


HostPort = Annotated[str, AfterValidator(_host_port)]


def host_port(text: str) -> tuple[str, int]:
    host, _, port = _host_port(text).rpartition(":")
    return host, int(port)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SmtpSection(Section):
    listen: HostPort | None = Field(None, description="Where the relay takes ebXML mail from peers.")
    relay: HostPort | None = Field(None, description="The SMTP server outgoing ebXML mail is handed to.")
    addresses: list[str] = Field(default_factory=list, description="This relay's ebXML mail addresses.")
    starttls: Literal["off", "offered", "required"] = Field(
        "offered", description="The listener's STARTTLS (needs [tls]); required: nothing in clear text.")
    relay_starttls: Literal["opportunistic", "required"] = Field(
        "opportunistic", description="Mail we send: STARTTLS when offered, or never without it.")
    max_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest mail taken (552 above).")
    timeout_s: float = Field(300, gt=0, description="An SMTP session idle (or in one DATA) this long "
                             "is closed.")
    max_sessions: int = Field(100, gt=0, description="SMTP sessions open at once; a connection beyond "
                              "them gets 421 and is closed.")


# --- keys and trust (issue 14; read by hub.relay.identities) ---------------------------------------------

class IdentitySection(Section):
    her_id: int = Field(description="The own HER-id these keys sign and decrypt for.")
    sign: str | None = Field(None, description="PKCS#12 file: signing certificate and key.")
    sign_cert: str | None = Field(None, description="PEM signing certificate (with sign_key).")
    sign_key: str | None = Field(None, description="PEM signing key.")
    enc: str | None = Field(None, description="PKCS#12 file: encryption certificate and key.")
    enc_cert: str | None = Field(None, description="PEM encryption certificate (with enc_key).")
    enc_key: str | None = Field(None, description="PEM encryption key.")
    previous_enc: list[str] = Field(default_factory=list, description="Older PKCS#12 encryption pairs that "
                                    "still decrypt.")
    password_file: str | None = Field(None, description="First line: the PKCS#12 / key password.")


class TrustSection(Section):
    anchors: list[str] = Field(min_length=1, description="PEM files of trusted root CAs.")
    intermediates: list[str] = Field(default_factory=list, description="PEM files of issuing CAs.")
    check_revocation: bool = Field(True, description="Check CRLs (from the certificates' "
                                   "distribution points).")
    crl_cache: str | None = Field(None, description="Folder to keep fetched CRLs in.")
    crl_timeout_s: float = Field(3.0, gt=0, description="Seconds to wait for a CRL download.")


class TlsSection(Section):
    cert: str = Field(description="PEM: the listeners' TLS certificate (and its chain).")
    key: str = Field(description="PEM: its private key.")
    password_file: str | None = Field(None, description="First line: the key's password.")


class HttpSection(Section):
    """The HTTP edge (hub.transport.http_server): listener, TLS and client certificates, limits."""

    listen: HostPort | None = Field(None, description="POST /submit (local systems), POST /ebxml (peers), "
                                    "GET /health, GET /metrics. Port 0: any free port.")
    tls: bool = Field(False, description="Serve HTTPS with cert and key, else with the [tls] certificate.")
    cert: str | None = Field(None, description="PEM: this relay's TLS certificate, then its chain.")
    key: str | None = Field(None, description="PEM: the private key of cert.")
    client_ca: list[str] = Field(default_factory=list, description="PEM anchors (and intermediates) "
                                 "client certificates must chain to.")
    require_client_cert: bool = Field(False, description="Only clients whose certificate a register "
                                      "party registered (sign_cert/enc_cert); others are refused.")
    anchors: list[str] = Field(default_factory=list, description="PEM anchors outbound https peers are "
                               "verified against; empty: the system's store.")
    client_cert: str | None = Field(None, description="PEM offered to https peers that ask; default: cert.")
    client_key: str | None = Field(None, description="PEM: the private key of client_cert.")
    max_body: int = Field(50 * 1024 * 1024, gt=0, description="Bytes of a request body, counted as read "
                          "(chunked too); more: 413.")
    header_timeout_s: float = Field(30, gt=0, description="For the request head (and the TLS handshake, "
                                    "and an idle kept-alive connection).")
    body_timeout_s: float = Field(120, gt=0, description="For the whole request body; more: 408.")
    max_connections: int = Field(256, ge=1, description="Open connections; one more gets 503.")

    @model_validator(mode="after")
    def _consistent(self) -> HttpSection:
        if bool(self.cert) != bool(self.key):
            raise ValueError("cert and key go together")
        if self.require_client_cert and not (self.tls and self.client_ca):
            raise ValueError("require_client_cert needs tls = true and client_ca")
        if bool(self.client_cert) != bool(self.client_key):
            raise ValueError("client_cert and client_key go together")
        return self


class FoldersSection(Section):
    root: str = Field("spool", description="spool/<her-id>/{out,in,archive,error} for local systems.")
    poll: float = Field(0.2, gt=0, description="Seconds between looks into the out/ folders.")


class WorkerSection(Section):
    threads: int = Field(8, ge=1, description="Delivery threads.")
    processes: int = Field(1, ge=1, le=64, description="Processes sharing the work (checks, signing, "
                           "encryption, delivery): this one, which also listens, and processes-1 workers "
                           "it starts and restarts.")
    lease_s: float = Field(300, gt=0, description="How long a claim on a message lasts.")
    poll_s: float = Field(0.25, gt=0, description="Seconds between looks for due work.")
    local_retries: int = Field(5, ge=0, description="Retries of a folder delivery.")
    local_retry_interval_s: float = Field(30, ge=0, description="Seconds between them (at least 1).")
    network_retries: int | None = Field(None, ge=0, description="Retries of an ebXML delivery; default: "
                                        "the CPA's Retries, else 5 (HIS 1213).")
    network_retry_interval_s: float | None = Field(None, gt=0, description="Seconds between them; default:"
                                                   " the CPA's RetryInterval, else 43200.")
    ttl_s: float = Field(0, ge=0, description="A message not delivered within this expires; 0: never.")
    apprec_limit_s: float = Field(APPREC_LIMIT_S, gt=0, description="A delivered message without an "
                                  "AppRec after this is flagged apprec_overdue.")
    defer_s: float = Field(60, gt=0, description="Retry of a check that could not be made (CRL away).")


class LogSection(Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        "warning", description="info: every state change; -v on the command line means info.")
    format: Literal["text", "json"] = Field("text", description="json: one JSON object a line.")


class HealthSection(Section):
    max_undelivered_age_s: float = Field(3600, gt=0, description="/health fails when a message has "
                                         "waited this long for delivery.")
    cert_warn_days: float = Field(14, ge=0, description="/health fails when an own certificate expires "
                                  "within this many days.")


class PostgresSection(Section):
    """A PostgreSQL store's connections, per process: a node has at most worker.processes x pool_max."""

    pool_min: int = Field(1, ge=0, description="Connections kept open while idle.")
    pool_max: int = Field(10, ge=1, description="Connections open at most (per process); a store "
                          "operation beyond them waits for one to come free.")
    pool_timeout_s: float = Field(30, gt=0, description="An operation that waited this long for a "
                                  "connection fails (StoreError naming postgres.pool_max).")

    @model_validator(mode="after")
    def _min_le_max(self) -> PostgresSection:
        if self.pool_min > self.pool_max:
            raise ValueError(f"pool_min ({self.pool_min}) is more than pool_max ({self.pool_max})")
        return self


class HubSettings(BaseSettings):
    """Every key of hub.toml. Sections are their own models so that each area can add its keys."""

    model_config = SettingsConfigDict(extra="forbid", env_prefix="HUB_", env_nested_delimiter="__")

    store: str = Field("sqlite:///hub.sqlite", description="sqlite:///relative/path, sqlite:////abs/path "
                       "or postgresql://user@host/db[?schema=name].")
    her_id: int | None = Field(None, description="The relay's own HER-id (ebXML From); `hub serve` needs it.")
    node: str | None = Field(None, description="This process's name in leases and timelines; default: "
                             "<hostname>-<her_id>.")
    pki: str | None = Field(None, description="Certificates: hub.security test-PKI layout (network only).")
    identity: str | None = Field(None, description="This relay's party in that PKI; default: the one "
                                 "whose HER-id is her_id.")
    # `register` is a method of every pydantic model (abc): the key is an alias of `registers`
    registers: list[str] = Field(default_factory=list, alias="register",
                                 description="Address register files or folders.")
    cpa_dir: str | None = Field(None, description="Folder of CPA XML files.")
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="The network edge's event loops (SMTP, HTTP); auto: uvloop where installed.")
    cpu_affinity: str = Field("auto", description="auto: each relay process pinned to a core of its own "
                              "(hub.relay.affinity); off; or the CPU list to choose from, e.g. 0,2-3.")
    identities: list[IdentitySection] = Field(default_factory=list, description="The relay's keys per own "
                                              "HER-id (PEM or PKCS#12); instead of pki.")
    trust: TrustSection | None = Field(None, description="Trust anchors and revocation; instead of pki.")
    tls: TlsSection | None = Field(None, description="The listeners' TLS certificate (STARTTLS, HTTPS).")
    smtp: SmtpSection = Field(default_factory=SmtpSection)
    http: HttpSection = Field(default_factory=HttpSection)
    folders: FoldersSection = Field(default_factory=FoldersSection)
    worker: WorkerSection = Field(default_factory=WorkerSection)
    log: LogSection = Field(default_factory=LogSection)
    health: HealthSection = Field(default_factory=HealthSection)
    postgres: PostgresSection = Field(default_factory=PostgresSection)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings  # the environment overrides the file


def _known(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    for part in loc[:-1]:
        f = next((f for n, f in model.model_fields.items() if (f.alias or n) == str(part)), None)
        ann = getattr(f, "annotation", None) if f else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return [f.alias or n for n, f in model.model_fields.items()]


def _explain(exc: ValidationError, where: str) -> ConfigError:
    lines = []
    for e in exc.errors():
        loc = tuple(x for x in e["loc"])
        key = ".".join(str(x) for x in loc) or "(file)"
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _known(HubSettings, loc), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            lines.append(f"{key}: unknown key{hint}")
        else:
            got = repr(e.get("input"))
            lines.append(f"{key}: {e['msg']}" + ("" if got in e["msg"] else f" (got {got})"))
    return ConfigError(f"{where}: " + "; ".join(lines), lines)


def validate(data: dict[str, Any], where: str = "configuration", *, environment: bool = False) -> HubSettings:
    """The settings in `data` (a parsed hub.toml); with `environment`, HUB_* variables override."""
    if isinstance(data.get("register"), str):
        data = {**data, "register": [data["register"]]}
    try:
        return HubSettings(**data) if environment else HubSettings.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, where) from None


def read(path: Path, *, environment: bool = True) -> HubSettings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return validate(data, str(path), environment=environment)


# --- which file, and what it means for a command ------------------------------------------------------

def find(given: Path | None = None) -> Path | None:
    """The hub.toml a command reads (see the module docstring), or None for the built-in defaults."""
    if given is not None:
        if not given.is_file():
            raise ConfigError(f"{given}: no such configuration file (--config)")
        return given
    env = os.environ.get(CONFIG_ENV)
    if env:
        if not Path(env).is_file():
            raise ConfigError(f"{env}: no such configuration file ({CONFIG_ENV})")
        return Path(env)
    for cand in (Path(FILE_NAME), home() / FILE_NAME):
        if cand.is_file():
            return cand
    return None


def sqlite_url(store: str, base: Path) -> str:
    """A relative sqlite:/// URL made absolute against `base` (the config file's folder)."""
    if store.startswith("sqlite:///") and not store.startswith("sqlite:////"):
        return f"sqlite:///{(base / store[len('sqlite:///'):]).resolve()}"
    return store


def redact(url: str) -> str:
    """A store URL without its password, for printing."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


@dataclass(frozen=True)
class Config:
    """What a command runs with: the file (None = built-in defaults) and its validated settings."""

    path: Path | None
    settings: HubSettings

    @property
    def base(self) -> Path:
        return self.path.resolve().parent if self.path is not None else home().resolve()

    def resolve(self, value: str | None) -> Path | None:
        if not value:
            return None
        p = Path(value)
        return p if p.is_absolute() else self.base / p

    @property
    def store_url(self) -> str:
        if self.path is None and "store" not in self.settings.model_fields_set:
            return f"sqlite:///{(home() / 'hub.sqlite').resolve()}"
        return sqlite_url(self.settings.store, self.base)

    @property
    def register_paths(self) -> list[Path]:
        if self.settings.registers:
            return [p for p in (self.resolve(r) for r in self.settings.registers) if p is not None]
        default = home() / "register.toml"
        return [default] if self.path is None else []

    @property
    def cpa_dir(self) -> Path | None:
        return self.resolve(self.settings.cpa_dir) or (home() / "cpa" if self.path is None else None)

    @property
    def pki(self) -> Path | None:
        return self.resolve(self.settings.pki)

    @property
    def spool_root(self) -> Path:
        return self.resolve(self.settings.folders.root) or self.base / "spool"

    @property
    def apprec_limit(self) -> timedelta:
        return timedelta(seconds=self.settings.worker.apprec_limit_s)

    def describe(self) -> dict[str, str | None]:
        """Which config and store a command read (printed, and in --json)."""
        return {"config": str(self.path) if self.path is not None else None, "store": redact(self.store_url)}

    def source_line(self) -> str:
        where = str(self.path) if self.path is not None else f"none found (defaults under {home()})"
        return f"config: {where}; store: {redact(self.store_url)}"


def load(given: Path | None = None) -> Config:
    """The configuration a command runs with: `find(given)` validated, or the defaults."""
    path = find(given)
    if path is None:
        return Config(None, validate({}, "defaults", environment=True))
    return Config(path, read(path))
