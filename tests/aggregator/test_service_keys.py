"""Keys and the watch list (issue 11): only keyed requests add accounts, idle accounts leave,
the key file is re-read without a restart and refused when group or others may read it."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from aggregator.errors import InputError
from aggregator.service import settings as settings_module
from aggregator.service.epochs import EpochRunner
from aggregator.service.launcher import Server, omnimargin_binary, service_config, start_server
from aggregator.service.settings import load_settings
from chains.devnet_nodes import free_ports


def _address() -> str:
    return "0x" + secrets.token_hex(20)


def _metric(c: httpx.Client, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", c.get("/metrics").text, re.MULTILINE)
    assert m is not None, f"{name} not in /metrics"
    return float(m.group(1))


def _epoch_accounts(c: httpx.Client) -> set[str]:
    return {a["account"].lower() for a in c.get("/v1/accounts").json()["accounts"]}


def _next_epochs(c: httpx.Client, n: int = 1, timeout: float = 60.0) -> None:
    start = c.get("/readyz").json()["epoch"]
    deadline = time.monotonic() + timeout
    while c.get("/readyz").json()["epoch"] < start + n:
        assert time.monotonic() < deadline, "no new epoch"
        time.sleep(0.2)


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_unkeyed_reads_watch_nothing_and_a_keyed_one_does(service: Server) -> None:
    """The attack of issue 11: unkeyed GETs on random addresses filled ``max_accounts``."""
    with service.client() as c:
        before = _epoch_accounts(c)
        strangers = [_address() for _ in range(50)]
        for i, stranger in enumerate(strangers):
            path = "margin" if i % 2 else "portfolio"
            r = c.get(f"/v1/accounts/{stranger}/{path}")
            assert (r.status_code, r.json()["field"]) == (404, "account"), r.text
        _next_epochs(c, 2)
        # none of them watched (an idle account of an earlier test may have left meanwhile)
        after = _epoch_accounts(c)
        assert after <= before and not after & {a.lower() for a in strangers}
        assert "API key" in r.json()["reason"]
        watched = _metric(c, "omnimargin_watched_accounts")
        assert watched <= len(before)  # the 50 strangers would have pushed it up
        new = _address()
        r = c.get(f"/v1/accounts/{new}/margin", headers=service.auth)
        assert r.status_code == 404 and "watched from now on" in r.json()["reason"]
        assert _metric(c, "omnimargin_watched_accounts") == watched + 1
        _until(lambda: new.lower() in _epoch_accounts(c), 30, "the keyed account never watched")
        assert c.get(f"/v1/accounts/{new}/margin").status_code == 200  # now read without a key


# --- a server of our own: a key file, idle accounts leaving after 2 epochs, a small limit


class Own:
    def __init__(self, server: Server, key_file: Path, config_keys: int) -> None:
        self.server, self.key_file, self.config_accounts = server, key_file, config_keys


@pytest.fixture(scope="module")
def own(service: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Own]:
    where = tmp_path_factory.mktemp("keys")
    key_file = where / "api_keys"
    key_file.write_text("# the service's keys, one a line\n\n")
    key_file.chmod(0o600)
    accounts = tomllib.loads(service.config_path.read_text())["accounts"]
    config = service_config(
        service.config_path,
        where / "config.toml",
        api_keys_file=str(key_file),
        idle_epochs_before_unwatch=2,
        max_accounts=len(accounts) + 3,
    )
    server = start_server(config, where / "serve.log", "--epoch-interval", "1")
    try:
        yield Own(server, key_file, len(accounts))
    finally:
        server.stop()


def _accepted(server: Server, key: str) -> bool:
    """Whether ``key`` opens a keyed route (an empty body: 422 once past the key, else 401)."""
    with server.client() as c:
        r = c.post("/v1/authorizations", json={}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code in (401, 422), r.text
    return r.status_code == 422


def test_an_idle_account_leaves_the_watch_list(own: Own) -> None:
    server = own.server
    idle = _address()
    with server.client(headers=server.auth) as c:
        baseline = _metric(c, "omnimargin_watched_accounts")
        left = _metric(c, "omnimargin_unwatched_accounts_total")
        assert c.get(f"/v1/accounts/{idle}/portfolio").status_code == 404
        assert _metric(c, "omnimargin_watched_accounts") == baseline + 1
        _until(lambda: idle.lower() in _epoch_accounts(c), 30, "never watched")
        # nothing on any chain: gone after 2 epochs (and absent from the epoch after)
        _until(lambda: idle.lower() not in _epoch_accounts(c), 30, "never unwatched")
        assert _metric(c, "omnimargin_watched_accounts") == baseline
        assert _metric(c, "omnimargin_unwatched_accounts_total") >= left + 1
        # the config's accounts stay, whatever they hold
        assert len(_epoch_accounts(c)) >= own.config_accounts


def test_past_max_accounts_a_keyed_read_is_refused_naming_the_limit(own: Own) -> None:
    server = own.server
    with server.client(headers=server.auth) as c:
        reasons = [c.get(f"/v1/accounts/{_address()}/margin").json()["reason"] for _ in range(4)]
    assert "watched from now on" in reasons[0]
    assert "service.max_accounts" in reasons[-1] and "full" in reasons[-1], reasons


def test_keys_are_added_and_revoked_by_the_key_file_without_a_restart(own: Own) -> None:
    server, key_file = own.server, own.key_file
    first, second = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    assert not _accepted(server, first)
    with key_file.open("a") as f:
        f.write(f"{first}\n# another\n{second}\n")
    _until(lambda: _accepted(server, first) and _accepted(server, second), 5, "keys not added")
    key_file.write_text(f"{second}\n")  # first revoked
    _until(lambda: not _accepted(server, first), 5, "a revoked key still accepted")
    assert _accepted(server, second) and _accepted(server, server.key)  # the config's key too
    # readable by others later: fail closed (and say so in the log), until fixed
    key_file.chmod(0o644)
    _until(lambda: not _accepted(server, second), 5, "a world-readable file's key accepted")
    assert _accepted(server, server.key)
    key_file.chmod(0o600)
    _until(lambda: _accepted(server, second), 5, "the fixed file's key not accepted")
    log = server.log()
    assert "api_keys_file" in log and "0644" in log
    assert first not in log and second not in log


def test_a_world_readable_key_file_is_refused_at_start(service: Server, tmp_path: Path) -> None:
    key_file = tmp_path / "api_keys"
    key_file.write_text(secrets.token_urlsafe(24) + "\n")
    key_file.chmod(0o644)
    config = service_config(service.config_path, tmp_path / "c.toml", api_keys_file=str(key_file))
    (port,) = free_ports(1)
    out = subprocess.run(
        [omnimargin_binary(), "serve", "--config", str(config), "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "service.api_keys_file" in out.stderr and "group or others" in out.stderr, out.stderr
    assert key_file.read_text().strip() not in out.stderr + out.stdout


# --- units: the key file, the eviction step


def test_key_file_comments_reload_and_fail_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings_module, "KEY_FILE_CHECK_S", 0.0)
    path = tmp_path / "keys"
    path.write_text("# comment\n  k1  \n\n#k2\n")
    path.chmod(0o600)
    keys = settings_module.KeyFile(path)
    assert keys.current() == [b"k1"]
    path.write_text("k1\nk3\n")
    assert keys.current() == [b"k1", b"k3"]
    path.chmod(0o640)
    assert keys.current() == []
    path.chmod(0o600)
    assert keys.current() == [b"k1", b"k3"]
    path.unlink()
    assert keys.current() == []
    path.write_text("k4\n")
    path.chmod(0o604)
    with pytest.raises(InputError) as err:
        load_settings({"api_keys_file": str(path)})
    assert err.value.field == "service.api_keys_file" and "0604" in err.value.reason
    os.chmod(path, 0o400)
    assert load_settings({"api_keys_file": str(path)}).api_key_bytes() == [b"k4"]


def _epoch(holdings: dict[str, bool], chains_ok: bool = True) -> Any:
    """A stand-in epoch: ``holdings`` says which accounts hold something."""
    return SimpleNamespace(
        world=SimpleNamespace(snapshots=[SimpleNamespace(ok=True), SimpleNamespace(ok=chains_ok)]),
        accounts={
            a: SimpleNamespace(report={"equity": 5.0 if held else 0.0})
            for a, held in holdings.items()
        },
        portfolios={
            a: ({"ETH": "1.5"}, {"ETH": 3000.0}) if held else ({"USDC": "0"}, {})
            for a, held in holdings.items()
        },
    )


def test_unwatch_idle_counts_empty_epochs_in_a_row() -> None:
    reserved = {"busy"}
    gone: list[int] = []
    runner = EpochRunner(
        SimpleNamespace(),  # type: ignore[arg-type]
        None,
        accounts={"config", "idle", "busy", "rich", "flaky"},
        pinned=frozenset({"config"}),
        idle_epochs=3,
        busy=lambda a: a in reserved,
        on_unwatch=gone.append,
    )
    empty = {"config": False, "idle": False, "busy": False, "rich": True, "flaky": False}
    assert runner.unwatch_idle(_epoch(empty)) == []
    assert runner.unwatch_idle(_epoch({**empty, "flaky": True})) == []  # flaky holds again
    assert runner.unwatch_idle(_epoch(empty, chains_ok=False)) == []  # counts for no one
    assert runner.unwatch_idle(_epoch(empty)) == ["idle"]  # its third empty epoch
    assert runner.accounts == {"config", "busy", "rich", "flaky"} and gone == [1]
    reserved.clear()  # its reservations done: it goes too
    assert runner.unwatch_idle(_epoch(empty)) == ["busy"]
    assert runner.unwatch_idle(_epoch(empty)) == ["flaky"]
    assert runner.accounts == {"config", "rich"} and gone == [1, 1, 1]
    assert runner.watch("x", limit=3) and not runner.watch("y", limit=3)
    assert runner.watch("x", limit=3)  # already watched
