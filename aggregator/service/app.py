"""``omnimargin serve``: the FastAPI application. Thin routes over the latest epoch.

Every route answers from :attr:`EpochRunner.current` (no chain I/O in a request); bad input is
a 4xx whose body names the field; the only writes are authorisations, each one durable SQLite
transaction before the response.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
import anyio.to_thread
from eth_account.signers.local import LocalAccount
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aggregator.accounts import clock_allowance
from aggregator.authorize import Request as AuthRequest
from aggregator.authorize import WithdrawalRequest as WithdrawRequest
from aggregator.authorize import check_request, decide, held_margin, parse_size
from aggregator.canonical import CanonicalCheck
from aggregator.errors import AggregatorError, InputError
from aggregator.inputs import load_json
from aggregator.keeper import Keeper, fund_report
from aggregator.liquidation import liquidation_policy
from aggregator.service import views
from aggregator.service.epochs import Epoch, EpochRunner
from aggregator.service.margin_calls import MarginCalls
from aggregator.service.metrics import Metrics
from aggregator.service.schemas import (
    ADDRESS_PATTERN,
    Accounts,
    Authorization,
    AuthorizationRequest,
    ErrorBody,
    Health,
    Margin,
    Portfolio,
    Ready,
    RiskReport,
    Snapshot,
    Withdrawal,
    WithdrawalRequest,
)
from aggregator.service.settings import ServiceSettings
from aggregator.store import IdempotentReplay, Store
from aggregator.withdraw import request_json, withdrawal_request
from chains.addresses import checksummed
from chains.config import OmnimarginConfig
from chains.errors import AddressError, ChainError
from montecarlo import MonteCarloError
from montecarlo.engine import Executor


class ApiError(Exception):
    """A 4xx/5xx with a field and a reason."""

    def __init__(self, status: int, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.status, self.field, self.reason = status, field, reason


@dataclass
class Service:
    """Everything the routes use, built once at the entry point."""

    cfg: OmnimarginConfig
    settings: ServiceSettings
    runner: EpochRunner
    store: Store
    signer: LocalAccount
    executor: Executor
    metrics: Metrics
    canonical: CanonicalCheck
    limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(4))
    alerts: MarginCalls = field(default_factory=MarginCalls)  # margin calls (no webhooks)
    keeper: Keeper | None = None  # liquidations (``serve`` builds one; tests may not)


def _error(status: int, field: str, reason: str) -> JSONResponse:
    body = ErrorBody(error=f"{field}: {reason}", field=field, reason=reason)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 422, 503)
}


async def service_of(request: Request) -> Service:  # async: no thread hop per request
    svc: Service = request.app.state.service
    return svc


Svc = Annotated[Service, Depends(service_of)]
#: an account in a path: a malformed one is a 422 naming ``account``
AccountPath = Annotated[str, Path(pattern=ADDRESS_PATTERN, description="0x and 40 hex digits")]


#: whether this request carried a valid API key (set by its key dependency; copied into the
#: worker thread of an authorisation): only keyed requests add accounts to the watch list
_KEYED: contextvars.ContextVar[bool] = contextvars.ContextVar("omnimargin_keyed", default=False)


def _key_ok(svc: Service, request: Request) -> None:
    _KEYED.set(False)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "authorization", "missing 'Authorization: Bearer <key>' header")
    given = token.strip().encode()
    match = False
    for key in svc.settings.api_key_bytes():  # every key compared, in constant time
        match |= hmac.compare_digest(given, key)
    if not match:
        raise ApiError(401, "authorization", "unknown API key")
    _KEYED.set(True)


async def require_key(svc: Svc, request: Request) -> None:
    _key_ok(svc, request)


async def read_key(svc: Svc, request: Request) -> None:
    if svc.settings.read_requires_key:
        _key_ok(svc, request)
    elif "authorization" in request.headers:
        # reads need no key here; a valid one still counts (it may add to the watch list)
        with contextlib.suppress(ApiError):
            _key_ok(svc, request)
    else:
        _KEYED.set(False)


async def unique_keys(request: Request) -> None:
    """A JSON body naming a key twice is a 400 naming it (pydantic keeps the last silently)."""
    load_json(await request.body(), "body")


def epoch_of(svc: Service) -> Epoch:
    epoch = svc.runner.current
    if epoch is None:
        why = svc.runner.last_error or "the first epoch is still being taken"
        raise ApiError(503, "epoch", f"not ready: {why}")
    return epoch


def account_of(svc: Service, epoch: Epoch, raw: str, field: str = "account") -> str:
    try:
        account = checksummed(field, raw)
    except AddressError as exc:
        raise ApiError(400, field, exc.reason) from None
    runner, settings = svc.runner, svc.settings
    # only a keyed request adds to the watch list (unkeyed ones could fill it for good)
    keyed = _KEYED.get() and settings.watch_new_accounts
    if account in epoch.accounts:
        if keyed and account not in runner.accounts:  # unwatched since, asked for again
            runner.watch(account, settings.max_accounts)
        return account
    if not keyed:
        how = "an API key" if settings.watch_new_accounts else "the config's accounts"
        raise ApiError(404, field, f"{account} is not watched by this service (add it with {how})")
    if runner.watch(account, settings.max_accounts):
        raise ApiError(404, field, f"{account} is not in this epoch yet; watched from now on")
    raise ApiError(
        404,
        field,
        f"{account} is not watched: the watch list is full "
        f"(service.max_accounts = {settings.max_accounts})",
    )


def create_app(svc: Service) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(svc.runner.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await svc.canonical.close()
            # here, not after uvicorn returns: uvicorn re-raises SIGTERM once it has shut down
            svc.runner.close()
            svc.executor.close()
            await asyncio.to_thread(svc.alerts.close)  # queued margin calls get a grace

    app = FastAPI(
        title="omnimargin",
        version="1",
        summary="Unified cross-chain margin, authorisations with EIP-712 attestations.",
        lifespan=lifespan,
    )
    app.state.service = svc
    _handlers(app, svc)
    _routes(app)
    views.mount(app)
    return app


def _handlers(app: FastAPI, svc: Service) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.field, exc.reason)

    @app.exception_handler(InputError)
    async def input_error(_: Request, exc: InputError) -> JSONResponse:
        return _error(400, exc.field, exc.reason)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        return _error(422, _loc(tuple(err.get("loc", ()))), str(err.get("msg", "invalid")))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "path", str(exc.detail))

    app.add_middleware(_Timing, metrics=svc.metrics)


class _Timing:
    """Request latency by route template and status class (a plain ASGI middleware)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.latency.labels(route, scope["method"], f"{status[0] // 100}xx").observe(
                time.perf_counter() - start
            )


def _routes(app: FastAPI) -> None:
    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get("/readyz", response_model=Ready, responses={503: {"model": Ready}}, tags=["ops"])
    async def readyz(svc: Svc) -> Any:
        epoch = svc.runner.current
        body = Ready(
            ready=epoch is not None,
            epoch=epoch.number if epoch else None,
            last_error=svc.runner.last_error,
        )
        return JSONResponse(body.model_dump(), status_code=200 if epoch else 503)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics(svc: Svc) -> Response:
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/v1/snapshot",
        response_model=Snapshot,
        responses=ERRORS,
        dependencies=[Depends(read_key)],
        tags=["margin"],
    )
    async def snapshot(svc: Svc) -> Snapshot:
        epoch = epoch_of(svc)
        return views.snapshot_body(epoch, _info(svc, epoch))

    @app.get(
        "/v1/accounts",
        response_model=Accounts,
        responses=ERRORS,
        dependencies=[Depends(read_key)],
        tags=["margin"],
    )
    async def accounts(svc: Svc) -> Accounts:
        epoch = epoch_of(svc)
        return views.accounts_body(
            epoch, _info(svc, epoch), _reserved(svc, epoch, list(epoch.accounts))
        )

    @app.get(
        "/v1/accounts/{account}/margin",
        response_model=Margin,
        responses=ERRORS,
        dependencies=[Depends(read_key)],
        tags=["margin"],
    )
    async def margin(svc: Svc, account: AccountPath) -> Response:
        epoch = epoch_of(svc)
        a = account_of(svc, epoch, account)
        body = views.live_margin_json(
            epoch.margin_json[a],
            epoch.accounts[a].report,
            _info(svc, epoch),
            _reserved(svc, epoch, [a])[a],
        )
        return Response(body, media_type="application/json")

    @app.get(
        "/v1/accounts/{account}/portfolio",
        response_model=Portfolio,
        responses=ERRORS,
        dependencies=[Depends(read_key)],
        tags=["margin"],
    )
    async def portfolio(svc: Svc, account: AccountPath) -> Portfolio:
        epoch = epoch_of(svc)
        a = account_of(svc, epoch, account)
        return views.portfolio_body(epoch, a, _info(svc, epoch))

    @app.post(
        "/v1/authorizations",
        response_model=Authorization,
        responses={**ERRORS, 409: {"model": ErrorBody}},
        dependencies=[Depends(require_key), Depends(unique_keys)],
        tags=["margin"],
    )
    async def authorizations(
        svc: Svc, body: AuthorizationRequest, idempotency_key: IdempotencyKey = None
    ) -> Authorization | JSONResponse:
        """Approve a position change (a signed MarginAttestation) only if every subset of the
        account's outstanding approvals and this one fits its equity."""
        return await _decided(svc, body, idempotency_key)

    @app.post(
        "/v1/withdrawals",
        response_model=Withdrawal,
        responses={**ERRORS, 409: {"model": ErrorBody}},
        dependencies=[Depends(require_key), Depends(unique_keys)],
        tags=["margin"],
    )
    async def withdrawals(
        svc: Svc, body: WithdrawalRequest, idempotency_key: IdempotencyKey = None
    ) -> Authorization | JSONResponse:
        """Approve taking collateral out of a CollateralVault (a signed WithdrawalAttestation)
        only if every outstanding approval of the account stays covered without it."""
        return await _decided(svc, body, idempotency_key)

    @app.get("/v1/liquidations", dependencies=[Depends(read_key)], tags=["margin"])
    async def liquidations(svc: Svc) -> dict[str, Any]:
        """The keeper's recent liquidation rounds (newest first): each account's plan, its
        signed steps and, when the keeper submits, what each step did on chain."""
        rounds = svc.keeper.rounds() if svc.keeper is not None else []
        return {"keeper": svc.keeper is not None and svc.keeper.lp.keeper, "rounds": rounds}

    @app.get("/v1/fund", dependencies=[Depends(read_key)], tags=["margin"])
    async def fund(svc: Svc) -> dict[str, Any]:
        """The insurance fund read now: its collateral in every vault, valued, and every bad
        debt on record (covered by the fund, or not)."""
        if svc.keeper is not None:  # read at most an epoch ago (the dashboard polls it)
            age = max(svc.settings.epoch_interval_s, 1.0)
            return await asyncio.to_thread(svc.keeper.fund_now, age)
        lp = liquidation_policy(svc.cfg)
        return await asyncio.to_thread(fund_report, svc.cfg, svc.store, lp)

    @app.post(
        "/v1/risk",
        response_model=RiskReport,
        responses=ERRORS,
        dependencies=[Depends(read_key)],
        tags=["risk"],
        openapi_extra=views.RISK_BODY,
    )
    async def risk(
        svc: Svc,
        request: Request,
        scenarios: Annotated[
            int | None, Query(ge=1000, le=10_000_000, description="default 100,000")
        ] = None,
        alpha: Annotated[float, Query(gt=0.5, lt=1)] = 0.99,
        horizon_days: Annotated[float, Query(gt=0, le=365)] = 1.0,
        seed: Annotated[int, Query(ge=0, lt=2**63)] = 0,
    ) -> RiskReport:
        if scenarios is None:
            scenarios = min(100_000, svc.settings.max_risk_scenarios)
        if scenarios > svc.settings.max_risk_scenarios:
            raise ApiError(
                422, "scenarios", f"at most {svc.settings.max_risk_scenarios} on this service"
            )
        text = (await request.body()).decode("utf-8", errors="replace")
        report = await asyncio.to_thread(
            views.run_risk_body, text, scenarios, alpha, horizon_days, seed, svc.executor
        )
        return RiskReport.model_validate(report)


IdempotencyKey = Annotated[
    str | None,
    Header(
        pattern=r"^[\x21-\x7e]{1,128}$",
        description="Same key and body within the attestation's lifetime: the same answer; "
        "the same key with another body: 409.",
    ),
]


async def _decided(
    svc: Service,
    body: AuthorizationRequest | WithdrawalRequest,
    idempotency_key: str | None,
) -> Authorization | JSONResponse:
    """A position's or a withdrawal's decision on the current epoch. The epoch was read
    before this request: a reorg since must not be signed over, and the target chain's clock
    must agree with the wall clock that times the attestation. NumPy and the durable SQLite
    write run off the event loop, a few threads at a time (more threads than cores only fight
    over the GIL)."""
    epoch = epoch_of(svc)
    allowance = clock_allowance(svc.cfg)
    known = any(c.chain_id == body.chain_id for c in svc.cfg.chains)  # else a 400 below
    target = body.chain_id if known else None
    reorged = await svc.canonical.reasons(epoch.world, target, allowance)
    return await anyio.to_thread.run_sync(
        _authorize, svc, body, epoch, reorged, idempotency_key, limiter=svc.limiter
    )


def _info(svc: Service, epoch: Epoch) -> dict[str, Any]:
    return epoch.info(time.time(), svc.settings.stale_after_s)


def _reserved(svc: Service, epoch: Epoch, accounts: list[str]) -> dict[str, float]:
    """Margin each account's outstanding attestations hold over its IM (the gate's worst case
    over them, on the epoch's scenarios)."""
    since = min((g.timestamp for g in epoch.world.gates.values()), default=0)
    live = svc.store.live_by_account(since)
    return {
        a: held_margin(epoch.accounts[a], live[a]) if a in live and a in epoch.accounts else 0.0
        for a in accounts
    }


def _authorize(
    svc: Service,
    body: AuthorizationRequest | WithdrawalRequest,
    epoch: Epoch,
    reorged: tuple[str, ...],
    idempotency_key: str | None = None,
) -> Authorization | JSONResponse:
    """A position's or a withdrawal's decision on the epoch's state of the account."""
    req: AuthRequest | WithdrawRequest
    asked: dict[str, Any] = {}
    if isinstance(body, WithdrawalRequest):
        req = withdrawal_request(
            svc.cfg, body.account, body.chain_id, body.token, body.amount, body.recipient
        )
        asked = request_json(req)
    else:
        req = AuthRequest(
            body.account,  # the schema checksummed it
            body.chain_id,
            body.market,
            parse_size(body.size_delta),
        )
        check_request(svc.cfg, req)
    account = account_of(svc, epoch, req.account)
    info = _info(svc, epoch)
    stale = (
        (
            f"epoch {epoch.number} is stale ({info['age_s']:.0f} s old; the last epoch failed: "
            f"{svc.runner.last_error or 'not yet retaken'})",
        )
        if info["stale"]
        else ()
    )
    claim = None
    if idempotency_key is not None:
        digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
        claim = (idempotency_key, digest)
    try:
        decision = decide(
            svc.cfg,
            epoch.accounts[account],
            req,
            svc.store,
            svc.signer,
            (*stale, *reorged),
            idempotency=claim,
            respond_extra={"epoch": info, **asked},
        )
    except IdempotentReplay as replay:
        if claim is None or replay.body_hash != claim[1]:
            raise ApiError(
                409, "Idempotency-Key", "already used with another body within its lifetime"
            ) from None
        return JSONResponse(json.loads(replay.response))
    except (AggregatorError, ChainError, MonteCarloError) as exc:
        raise ApiError(400, "authorization", str(exc)) from None
    svc.metrics.authorizations.labels("approved" if decision["approved"] else "refused").inc()
    if asked:
        return Withdrawal.model_validate({**decision, **asked, "epoch": info})
    return Authorization.model_validate({**decision, "epoch": info})
