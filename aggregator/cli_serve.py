"""``omnimargin serve`` and ``omnimargin report``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from aggregator.errors import AggregatorError, InputError


def _fail(message: str) -> None:
    from aggregator.cli import fail

    fail(message)


def build_service(config_file: Path | None, **flags: Any) -> Any:
    """Everything ``serve`` runs, from the config and the flags (no server started)."""
    from aggregator.alerts import load_alerts
    from aggregator.attestation import load_signer_key
    from aggregator.canonical import CanonicalCheck
    from aggregator.cli import ExecutorChoice, make_executor
    from aggregator.service.app import Service
    from aggregator.service.epochs import EpochRunner, ExecutorSpec
    from aggregator.service.margin_calls import MarginCalls
    from aggregator.service.metrics import Metrics
    from aggregator.service.settings import load_settings
    from aggregator.store import Store
    from chains.config import config_path, load_config
    from montecarlo import LocalExecutor
    from montecarlo.engine import Executor

    path = config_path(config_file)
    cfg = load_config(path)
    settings = load_settings(cfg.service, **flags)
    destinations = load_alerts(cfg.alerts)
    if not settings.api_key_bytes():
        raise InputError(
            "service.api_keys",
            "no API key configured (authorisations need one): set api_keys, "
            "api_keys_env or api_keys_file in [service]",
        )
    signer = load_signer_key(cfg.signer)
    store_path = Path(cfg.store_path) if cfg.store_path else path.with_name("state.sqlite")
    store = Store(store_path)
    # a new store, or one behind the chain, cannot know every outstanding attestation: bump
    # the gates' counters before approving anything (docs/ARCHITECTURE.md, the gate's contract)
    from aggregator.gate_sync import CounterWatch, sync_counters
    from aggregator.keeper import Keeper
    from aggregator.liquidation import liquidation_policy

    liquidation = liquidation_policy(cfg)

    sync_counters(cfg, store, signer, say=lambda m: print(m, flush=True))
    counters = CounterWatch(cfg, store, signer)

    def on_epoch(epoch: Any) -> None:
        metrics.on_epoch(epoch)
        alerts.on_epoch(epoch)  # only queues: webhooks go out on their own threads
        metrics.health_bands(alerts.bands())
        counters.check({c: g.global_counter for c, g in epoch.world.gates.items()})
        keeper.on_epoch(epoch)  # its own thread: plans, signs, submits with a keeper_sender

    # epochs leave a core to the requests unless told otherwise
    workers = settings.workers or (None if settings.executor == "ray" else _spare_cores())
    spec = ExecutorSpec(settings.executor, settings.ray_address, workers)
    # POST /v1/risk runs here: worker processes even for small passes (requests keep the GIL)
    executor: Executor = (
        LocalExecutor(settings.workers, processes=True)
        if settings.executor == "local"
        else make_executor(ExecutorChoice.ray, settings.ray_address, settings.workers, False)
    )
    metrics = Metrics()
    alerts = MarginCalls(destinations, on_outcome=metrics.alert_sent)
    keeper = Keeper(
        cfg,
        store,
        signer,
        liquidation,
        on_round=metrics.liquidation_round,
        on_fund=metrics.fund,
    )
    runner = EpochRunner(
        cfg,
        str(store_path),
        spec,
        interval_s=settings.epoch_interval_s,
        stale_after_s=settings.stale_after_s,
        read_timeout_s=settings.read_timeout_s,
        accounts={str(a) for a in cfg.accounts},
        on_epoch=on_epoch,
        pnl_budget_mb=settings.pnl_cache_mb,
        pinned=frozenset(str(a) for a in cfg.accounts),
        idle_epochs=settings.idle_epochs_before_unwatch,
        busy=lambda account: any(r.state == "active" for r in store.reservations(account)),
        on_unwatch=metrics.unwatched.inc,
    )
    metrics.watch_list(runner.accounts)
    canonical = CanonicalCheck(cfg, timeout_s=min(settings.read_timeout_s, 5.0))
    return Service(
        cfg,
        settings,
        runner,
        store,
        signer,
        executor,
        metrics,
        canonical,
        alerts=alerts,
        keeper=keeper,
    )


def _spare_cores() -> int:
    import os

    return max(1, (os.cpu_count() or 2) - 1)


def serve(
    config: Annotated[
        Path | None, typer.Option(help="Config file (default $OMNIMARGIN_CONFIG).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (8000).")] = None,
    executor: Annotated[
        str | None, typer.Option(help="Where epochs run their Monte Carlo: local or ray.")
    ] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join.")] = None,
    epoch_interval: Annotated[
        float | None, typer.Option(help="Seconds between epochs (config: epoch_interval_s).")
    ] = None,
) -> None:
    """Serve margin, authorisations and the dashboard over HTTP (FastAPI on uvicorn)."""
    import uvicorn

    from aggregator.service.app import create_app
    from chains.errors import ChainError
    from montecarlo import MonteCarloError

    try:
        svc = build_service(
            config,
            host=host,
            port=port,
            executor=executor,
            ray_address=ray_address,
            epoch_interval_s=epoch_interval,
        )
    except (AggregatorError, ChainError, MonteCarloError) as exc:
        _fail(str(exc))
        return
    from threadpoolctl import threadpool_limits

    # requests run side by side on a few threads: one BLAS thread each, not one per core each
    threadpool_limits(limits=1, user_api="blas")
    logging.getLogger("aggregator").setLevel(logging.INFO)
    s = svc.settings
    typer.echo(
        f"omnimargin: serving on http://{s.host}:{s.port}/ ({len(svc.runner.accounts)} accounts, "
        f"an epoch every {s.epoch_interval_s:g} s, {s.executor} executor)",
        err=True,
    )
    try:
        uvicorn.run(create_app(svc), host=s.host, port=s.port, log_level="warning")
    finally:
        svc.runner.close()
        svc.executor.close()
        svc.store.close()
        svc.alerts.close()


def report(
    account: Annotated[str, typer.Argument(help="Account address.")],
    out: Annotated[Path, typer.Option(help="HTML file to write.")] = Path("report.html"),
    config: Annotated[
        Path | None, typer.Option(help="Config file (default $OMNIMARGIN_CONFIG).")
    ] = None,
) -> None:
    """Write one self-contained HTML report of an account's margin (tables and charts)."""
    from aggregator.accounts import policy_of
    from aggregator.authorize import account_state
    from aggregator.cli_margin import checksum
    from aggregator.report import render_report
    from aggregator.world import read_world
    from chains.config import config_path, load_config
    from chains.errors import ChainError
    from montecarlo import MonteCarloError

    try:
        cfg = load_config(config_path(config))
        who = checksum(account)
        policy, _ = policy_of(cfg)
        world = asyncio.run(read_world(cfg, [who], tolerance=policy.price_tolerance))
        state = account_state(cfg, world, who)
        path = config_path(config)
        store_file = Path(cfg.store_path) if cfg.store_path else path.with_name("state.sqlite")
        history: list[Any] = []
        if store_file.exists():
            from aggregator.store import Store

            store = Store(store_file)
            try:
                history = store.reservations(who)
            finally:
                store.close()
        html = render_report(state, history)
        try:
            out.write_text(html)
        except OSError as exc:
            raise InputError("out", f"cannot write {out} ({exc.strerror})") from None
    except (AggregatorError, ChainError, MonteCarloError) as exc:
        _fail(str(exc))
        return
    typer.echo(f"wrote {out} ({len(html) // 1024} KiB): margin report of {who}", err=True)
