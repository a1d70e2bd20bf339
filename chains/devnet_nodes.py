"""The devnet's anvil processes: find the binary, start nodes, record them, stop only ours.

State lives in ``<dir>/devnet.json``: for each node its name, chain id, port, pid and log file.
A node counts as ours only while ``/proc/<pid>/cmdline`` is anvil's with our ``--port``, so a
recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chains.errors import DevnetError

ANVIL_ENV = "OMNIMARGIN_ANVIL"
REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_FILE = "devnet.json"
HOST = "127.0.0.1"
CHAIN_ID_BASE = 31337000
BLOCK_TIME_S = 1
GAS_LIMIT = 100_000_000  # room for mint_batch over 1,000 accounts in one transaction


@dataclass(frozen=True)
class NodeSpec:
    """What one devnet chain is: its name, id and whether it plays an L2."""

    name: str
    chain_id: int
    l2: bool


@dataclass(frozen=True)
class Node:
    """A started anvil node."""

    name: str
    chain_id: int
    l2: bool
    port: int
    pid: int
    log: str

    @property
    def rpc_url(self) -> str:
        return f"http://{HOST}:{self.port}"


def node_specs(chains: int) -> list[NodeSpec]:
    """devnet-eth (L1), devnet-arb and devnet-base (L2s), then devnet-l2-4, ... as needed."""
    if not 1 <= chains <= 9:
        raise DevnetError(f"chains: must be between 1 and 9, got {chains}")
    names = ["devnet-eth", "devnet-arb", "devnet-base"]
    return [
        NodeSpec(names[i] if i < len(names) else f"devnet-l2-{i + 1}", CHAIN_ID_BASE + i + 1, i > 0)
        for i in range(chains)
    ]


def anvil_binary() -> str:
    """``$OMNIMARGIN_ANVIL``, else ``node_modules/.bin/anvil`` of the repo, else ``anvil``."""
    env = os.environ.get(ANVIL_ENV)
    if env:
        if not (Path(env).is_file() and os.access(env, os.X_OK)):
            raise DevnetError(f"{ANVIL_ENV}: {env} is not an executable file")
        return env
    local = REPO_ROOT / "node_modules" / ".bin" / "anvil"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("anvil")
    if found:
        return found
    raise DevnetError(
        f"anvil not found ({ANVIL_ENV} unset, no {local}, none on PATH): run make install"
    )


# --- state file ---------------------------------------------------------------------------


def read_state(directory: Path) -> dict[str, Any] | None:
    path = directory / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DevnetError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise DevnetError(f"{path}: not a devnet state file (no nodes list)")
    return data


def write_state(directory: Path, state: dict[str, Any]) -> None:
    path = directory / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)


def nodes_of(state: dict[str, Any]) -> list[Node]:
    try:
        return [Node(**n) for n in state["nodes"]]
    except TypeError as exc:
        raise DevnetError(f"{STATE_FILE}: bad node entry ({exc})") from None


def node_record(node: Node) -> dict[str, Any]:
    return asdict(node)


# --- processes ----------------------------------------------------------------------------


def _reap(pid: int, wait_s: float = 0.0) -> bool:
    """Collect ``pid`` if it is our exited child, waiting up to ``wait_s``; True once reaped."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (or already collected)
            return False
        if done == pid:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs. A zombie does not; if it is our child it is reaped."""
    if _reap(pid):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        # the leader of a multi-threaded process turns Z before its other threads are gone,
        # and only then can it be reaped: wait a moment rather than leave a zombie behind
        _reap(pid, wait_s=1.0)
        return False
    return True


def is_our_anvil(node: Node) -> bool:
    """True if ``node.pid`` runs anvil with ``--port <node.port>`` (not a recycled pid)."""
    try:
        argv = Path(f"/proc/{node.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not argv or b"anvil" not in Path(os.fsdecode(argv[0])).name.encode():
        return False
    port = str(node.port).encode()
    return any(a == b"--port" and b == port for a, b in itertools.pairwise(argv))


def running_nodes(state: dict[str, Any]) -> list[Node]:
    return [n for n in nodes_of(state) if is_alive(n.pid) and is_our_anvil(n)]


def port_in_use(port: int) -> bool:
    """True if ``HOST:port`` cannot be bound (anvil binds with SO_REUSEADDR, and so do we)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports the OS says are free now (for tests; they are not reserved)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in socks]


def spawn_anvil(anvil: str, spec: NodeSpec, port: int, directory: Path) -> Node:
    """Start one anvil in its own session (it outlives the command), logging to the dir."""
    log = directory / f"anvil-{spec.chain_id}.log"
    argv = [
        anvil,
        "--host", HOST,
        "--port", str(port),
        "--chain-id", str(spec.chain_id),
        "--gas-limit", str(GAS_LIMIT),
        # transactions mined at once, and a block every second as a live chain: its head's
        # clock follows the wall clock (attestations are timed by it)
        "--block-time", str(BLOCK_TIME_S),
        "--mixed-mining",
        "--silent",
    ]  # fmt: skip
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        pid = os.posix_spawn(
            anvil,
            argv,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, fd, 1),
                (os.POSIX_SPAWN_DUP2, fd, 2),
            ],
            setsid=True,
        )
    except OSError as exc:
        raise DevnetError(f"cannot start {anvil} ({exc.strerror})") from None
    finally:
        os.close(fd)
    return Node(spec.name, spec.chain_id, spec.l2, port, pid, str(log))


def log_tail(node: Node, lines: int = 10) -> str:
    try:
        text = Path(node.log).read_text(errors="replace").strip()
    except OSError:
        return "(no log)"
    return " | ".join(text.splitlines()[-lines:]) or "(empty log)"


def _rpc_chain_id(url: str, timeout: float) -> int | None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    req = urllib.request.Request(
        url, body.encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(json.loads(resp.read())["result"], 16)
    except (OSError, urllib.error.URLError, ValueError, KeyError):
        return None


def wait_ready(node: Node, timeout: float = 15.0) -> None:
    """Wait until the node answers eth_chainId with its chain id; raise with the log if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(node.pid):
            raise DevnetError(f"anvil for {node.name} on port {node.port} exited: {log_tail(node)}")
        got = _rpc_chain_id(node.rpc_url, timeout=1.0)
        if got == node.chain_id:
            return
        if got is not None:
            raise DevnetError(
                f"port {node.port} answers chain id {got}, expected {node.chain_id}: "
                "another node took the port"
            )
        time.sleep(0.05)
    raise DevnetError(
        f"anvil for {node.name} on port {node.port} did not answer within {timeout:.0f} s: "
        f"{log_tail(node)}"
    )


def stop_node(node: Node, timeout: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after ``timeout``; only if the pid is still our anvil."""
    if not (is_alive(node.pid) and is_our_anvil(node)):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(node.pid):
            return True
        time.sleep(0.02)
    if is_our_anvil(node):
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while is_alive(node.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return True
