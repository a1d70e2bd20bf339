"""``omnimargin keys rotate``: registered in aggregator/cli.py as the ``keys`` sub-app."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aggregator.console import err_console, out_console
from aggregator.errors import AggregatorError, InputError

keys_app = typer.Typer(help="The attestation signer.", no_args_is_help=True)


@keys_app.command()
def rotate(
    config: Annotated[
        Path | None, typer.Option(help="Config file (default $OMNIMARGIN_CONFIG).")
    ] = None,
    owner_key_env: Annotated[
        str | None,
        typer.Option(help="Variable holding the gates' owner key (default: the devnet's owner)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Add a new signer to every chain's MarginGate, sign with it, retire the old one.

    A running `omnimargin serve` loaded the old key at start: restart it afterwards."""
    from eth_account import Account

    from aggregator.cli import fail
    from aggregator.keys import rotate as rotate_signer
    from chains.config import config_path, load_config
    from chains.errors import ChainError

    try:
        cfg = load_config(config_path(config))
        owner = None
        if owner_key_env is not None:
            raw = os.environ.get(owner_key_env)
            if not raw:
                raise InputError(
                    "owner_key_env", f"environment variable {owner_key_env} is not set"
                )
            try:
                owner = Account.from_key(raw.strip())
            except ValueError:
                raise InputError("owner_key_env", f"{owner_key_env} holds no private key") from None
        done = rotate_signer(cfg, owner, lambda m: err_console.print(f"[dim]{m}[/dim]"))
    except (AggregatorError, ChainError) as exc:
        fail(str(exc))
    if as_json:
        steps = [s.__dict__ for s in done.steps]
        typer.echo(json.dumps({"old_signer": done.old, "new_signer": done.new, "steps": steps}))
        return
    table = Table(title=f"signer {done.old} -> {done.new}")
    for col in ("chain", "action", "signer", "transaction"):
        table.add_column(col)
    for s in done.steps:
        table.add_row(str(s.chain_id), s.action, s.signer, s.tx or "-")
    out_console.print(table)
    out_console.print("restart `omnimargin serve` to sign with the new key", highlight=False)
