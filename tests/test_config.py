"""hub.toml: one file for every command, found the same way, validated with errors that name the key."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from hub import config
from hub.cli.main import app
from hub.paths import PROJECT_DIR as ROOT
from hub.relay.server import RelayConfig
from hub.store import open_store

runner = CliRunner()
DOCS = ROOT / "docs"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HUB_CONFIG", raising=False)
    monkeypatch.delenv("HUB_STORE", raising=False)
    monkeypatch.chdir(tmp_path)


def _toml_blocks(md: Path) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", md.read_text(encoding="utf-8"), re.S)


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    out = set()
    for name, f in model.model_fields.items():
        key = prefix + (f.alias or name)
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= _keys(ann, key + ".")
        else:
            out.add(key)
    return out


def test_the_documented_example_is_valid_and_every_key_is_documented(tmp_path: Path) -> None:
    doc = DOCS / "configuration.md"
    (example,) = _toml_blocks(doc)
    s = config.validate(tomllib.loads(example), "docs/configuration.md")
    assert s.her_id == 80000 and s.worker.network_retries == 5 and s.log.format == "json"
    reference = set(re.findall(r"^\| `([a-z_.]+)` \|", doc.read_text(encoding="utf-8"), re.M))
    assert reference == _keys(config.HubSettings), "docs/configuration.md's key table is not the schema"
    blocks = [tomllib.loads(b) for b in _toml_blocks(DOCS / "relay.md")]  # every TOML there parses
    relay_configs = [b for b in blocks if "party" not in b]  # the others are register examples
    assert relay_configs
    for block in relay_configs:  # the short example there validates too
        config.validate(block, "docs/relay.md")


def test_the_demo_configs_are_valid() -> None:
    for name in ("hub.toml", "sykehus/hub.toml"):
        config.read(ROOT / "fixtures" / "demo" / name)


@pytest.mark.parametrize(("text", "expected"), [
    ("her_id = 1\n[worker]\nnetwork_retrys = 2\n",
     "worker.network_retrys: unknown key; did you mean network_retries?"),
    ("her_id = 1\nregistr = []\n", "registr: unknown key; did you mean register?"),
    ("her_id = 'eighty'\n", "her_id: Input should be a valid integer"),
    ("her_id = 1\n[worker]\nthreads = 0\n", "worker.threads: Input should be greater than or equal to 1"),
    ("her_id = 1\n[smtp]\nrelay = 'mail.example'\n", "smtp.relay: Value error, expected host:port"),
    ("her_id = 1\n[log]\nformat = 'xml'\n", "log.format: Input should be 'text' or 'json'"),
    ("her_id = 1\nstore = [\n", "not valid TOML"),
])
def test_bad_files_are_errors_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    f = tmp_path / "hub.toml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(config.ConfigError) as exc:
        config.read(f)
    assert str(exc.value).startswith(f"{f}: ") and expected in str(exc.value)
    with pytest.raises(config.ConfigError):  # hub serve loads through the same schema
        RelayConfig.load(f)
    r = runner.invoke(app, ["config", "check", str(f)])
    assert r.exit_code == 1 and expected in r.stderr
    r = runner.invoke(app, ["config", "check", str(f), "--json"])
    got = json.loads(r.stdout)
    assert r.exit_code == 1 and got["valid"] is False and any(expected in e for e in got["errors"])


def test_config_check_accepts_a_good_file_and_names_missing_files(tmp_path: Path) -> None:
    f = tmp_path / "hub.toml"
    f.write_text('her_id = 80000\nregister = "register.toml"\n', encoding="utf-8")
    r = runner.invoke(app, ["config", "check", str(f)])
    assert r.exit_code == 1 and f"register: {tmp_path / 'register.toml'} does not exist" in r.stderr
    (tmp_path / "register.toml").write_text("", encoding="utf-8")
    r = runner.invoke(app, ["config", "check", str(f)])
    assert r.exit_code == 0 and "valid" in r.stdout and str(tmp_path / "hub.sqlite") in r.stdout


def test_which_file_is_read_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    files = {}
    places = (("home", home), ("cwd", tmp_path), ("env", tmp_path / "e"), ("given", tmp_path / "g"))
    for name, where in places:
        where.mkdir(exist_ok=True)
        files[name] = where / "hub.toml"
        files[name].write_text(f'her_id = 80000\nnode = "{name}"\n', encoding="utf-8")
    monkeypatch.setenv("HUB_CONFIG", str(files["env"]))
    assert config.load(files["given"]).settings.node == "given"
    assert config.load().settings.node == "env"
    monkeypatch.delenv("HUB_CONFIG")
    assert config.load().settings.node == "cwd"
    files["cwd"].unlink()
    assert config.load().settings.node == "home"
    files["home"].unlink()
    assert config.load().path is None
    with pytest.raises(config.ConfigError, match="no such configuration file"):
        config.load(tmp_path / "nope.toml")
    monkeypatch.setenv("HUB_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(config.ConfigError, match="HUB_CONFIG"):
        config.load()


def test_relative_paths_are_the_files_and_the_environment_overrides(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "relay"
    d.mkdir()
    (d / "hub.toml").write_text('her_id = 80000\nregister = ["reg.toml"]\n[worker]\nthreads = 2\n',
                                encoding="utf-8")
    monkeypatch.setenv("HUB_WORKER__THREADS", "16")
    cfg = config.load(d / "hub.toml")
    assert cfg.store_url == f"sqlite:///{d.resolve() / 'hub.sqlite'}"
    assert cfg.register_paths == [d.resolve() / "reg.toml"]
    assert cfg.settings.worker.threads == 16
    rc = RelayConfig.load(d / "hub.toml")
    assert rc.worker.threads == 16 and rc.register == [d.resolve() / "reg.toml"]
    monkeypatch.setenv("HUB_WORKER__THREADS", "lots")
    with pytest.raises(config.ConfigError, match="worker.threads"):
        config.load(d / "hub.toml")


def test_commands_never_create_an_empty_store_and_say_what_they_read(tmp_path: Path) -> None:
    f = tmp_path / "hub.toml"
    f.write_text('her_id = 80000\nstore = "sqlite:///data/relay.sqlite"\n', encoding="utf-8")
    missing = tmp_path / "data" / "relay.sqlite"
    for args in (["queue", "list"], ["queue", "stats"], ["queue", "overdue"], ["queue", "show", "abc"]):
        r = runner.invoke(app, [*args, "--config", str(f)])
        assert r.exit_code == 1 and f"no store at {missing}" in r.stderr, args
    assert not missing.exists()
    missing.parent.mkdir()
    open_store(f"sqlite:///{missing}").close()  # what a relay's first start does
    r = runner.invoke(app, ["queue", "stats", "--json", "--config", str(f)])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["source"] == {"config": str(f), "store": f"sqlite:///{missing}"}
    assert f"config: {f}" in r.stderr
    r = runner.invoke(app, ["--config", str(f), "queue", "stats", "--json"])  # the root option too
    assert r.exit_code == 0 and json.loads(r.stdout)["source"]["config"] == str(f)


def test_registry_reads_the_register_the_config_names(tmp_path: Path) -> None:
    (tmp_path / "reg.toml").write_text('[[party]]\nher_id = 82001\nname = "Legekontoret"\nkind = "gp"\n'
                                       "local = true\n", encoding="utf-8")
    (tmp_path / "hub.toml").write_text('her_id = 80000\nregister = ["reg.toml"]\n', encoding="utf-8")
    r = runner.invoke(app, ["registry", "list", "--json"])  # ./hub.toml
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert [p["her_id"] for p in out["parties"]] == [82001]
    assert Path(out["source"]["config"]).resolve() == tmp_path / "hub.toml"
    assert [Path(p).resolve() for p in out["source"]["register"]] == [tmp_path / "reg.toml"]
    assert str(tmp_path / "reg.toml") in r.stderr
    (tmp_path / "hub.toml").write_text("her_id = 80000\n", encoding="utf-8")
    r = runner.invoke(app, ["registry", "list"])
    assert r.exit_code == 2 and "names no register" in r.stderr


def test_version_flag() -> None:
    from hub import __version__

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"hub {__version__}"


def test_the_postgres_pool_is_configured_in_hub_toml() -> None:
    s = config.validate({"her_id": 1, "postgres": {"pool_max": 4, "pool_timeout_s": 5}})
    assert (s.postgres.pool_min, s.postgres.pool_max, s.postgres.pool_timeout_s) == (1, 4, 5)
    cfg = RelayConfig.from_settings(s, config.home())
    assert cfg.postgres.pool_max == 4
    with pytest.raises(config.ConfigError, match="postgres.pool_max: Input should be greater than or equal"):
        config.validate({"postgres": {"pool_max": 0}})
    with pytest.raises(config.ConfigError, match="pool_min .3. is more than pool_max .2."):
        config.validate({"postgres": {"pool_min": 3, "pool_max": 2}})


def test_event_loop_is_uvloop_unless_told_otherwise() -> None:
    from hub.transport.loops import new_event_loop

    assert config.validate({}).event_loop == "auto"
    with pytest.raises(config.ConfigError, match="event_loop"):
        config.validate({"event_loop": "trio"})
    for kind, module in (("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio.unix_events")):
        loop = new_event_loop(kind)
        try:
            assert type(loop).__module__ == module, kind
        finally:
            loop.close()
