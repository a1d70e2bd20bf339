"""Start a real ``omnimargin serve`` on loopback as a subprocess and wait until it is ready
(the tests' and the load benchmark's server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from chains.devnet_nodes import free_ports


@dataclass
class Server:
    """A running service: its URL, API key, config file and process."""

    url: str
    key: str
    config_path: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kw)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def omnimargin_binary() -> str:
    return str(Path(sys.executable).with_name("omnimargin"))


def service_config(config_path: Path, out: Path, **service: Any) -> Path:
    """A copy of a devnet config with ``[service]`` settings changed."""
    data = tomllib.loads(config_path.read_text())
    data["service"] = {**data.get("service", {}), **service}
    out.write_text(tomli_w.dumps(data))
    return out


def start_server(config_path: Path, log_path: Path, *args: str, ready_s: float = 120.0) -> Server:
    """Start ``omnimargin serve`` on a free port and wait until /readyz says ready."""
    (port,) = free_ports(1)
    data = tomllib.loads(config_path.read_text())
    key = data["service"]["api_keys"][0]
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [omnimargin_binary(), "serve", "--config", str(config_path), "--port", str(port), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = Server(f"http://127.0.0.1:{port}", key, config_path, proc, log_path)
    deadline = time.monotonic() + ready_s
    with httpx.Client(base_url=server.url, timeout=5.0) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"omnimargin serve exited {proc.returncode}:\n{server.log()}")
            try:
                if c.get("/readyz").status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"omnimargin serve not ready in {ready_s} s:\n{server.log()}")
