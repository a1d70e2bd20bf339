"""The dashboard at ``GET /`` and the SVG charts it inlines (rendered here, per epoch)."""

from __future__ import annotations

import threading
from functools import lru_cache
from importlib import resources
from typing import Annotated, Literal

import numpy as np
from fastapi import Depends, FastAPI, Path
from fastapi.responses import HTMLResponse, Response

from aggregator.charts import contributions_svg, loss_distribution_svg
from aggregator.service.app import ERRORS, AccountPath, Svc, account_of, epoch_of, read_key
from aggregator.service.epochs import Epoch
from aggregator.service.margin_calls import AlertsReport

Chart = Literal["losses", "by_chain", "by_asset"]


@lru_cache(maxsize=1)
def _page() -> str:
    return (resources.files("aggregator.service") / "static" / "dashboard.html").read_text()


def chart_svg(epoch: Epoch, account: str, chart: Chart) -> str:
    """One chart of one account in this epoch."""
    state = epoch.accounts[account]
    r = state.report
    if chart == "losses":
        losses = -(state.scen.returns @ state.exposures)
        return loss_distribution_svg(
            np.asarray(losses), r["var"], r["es"], r["alpha"], "Loss distribution"
        )
    if chart == "by_chain":
        return contributions_svg(r["by_chain"], "ES contribution by chain")
    return contributions_svg(r["by_asset"], "ES contribution by asset")


class _ChartCache:
    """The charts of the latest epoch (a new epoch empties it)."""

    def __init__(self, size: int = 256) -> None:
        self.epoch = -1
        self.size = size
        self.items: dict[tuple[str, str], str] = {}
        self.lock = threading.Lock()

    def get(self, epoch: Epoch, account: str, chart: Chart) -> str:
        key = (account, chart)
        with self.lock:
            if epoch.number != self.epoch:
                self.epoch, self.items = epoch.number, {}
            found = self.items.get(key)
        if found is not None:
            return found
        svg = chart_svg(epoch, account, chart)
        with self.lock:
            if epoch.number == self.epoch:
                if len(self.items) >= self.size:
                    self.items.pop(next(iter(self.items)))
                self.items[key] = svg
        return svg


def mount_dashboard(app: FastAPI) -> None:
    cache = _ChartCache()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard(svc: Svc) -> HTMLResponse:
        refresh_ms = int(max(svc.settings.epoch_interval_s, 1.0) * 1000)
        return HTMLResponse(_page().replace("__REFRESH_MS__", str(refresh_ms)))

    @app.get(
        "/v1/accounts/{account}/charts/{chart}.svg",
        response_class=Response,
        responses={**ERRORS, 200: {"content": {"image/svg+xml": {}}}},
        dependencies=[Depends(read_key)],
        tags=["dashboard"],
    )
    def chart(svc: Svc, account: AccountPath, chart: Annotated[Chart, Path()]) -> Response:
        epoch = epoch_of(svc)
        a = account_of(svc, epoch, account)
        return Response(cache.get(epoch, a, chart), media_type="image/svg+xml")

    @app.get(
        "/v1/alerts",
        response_model=AlertsReport,
        responses=ERRORS,
        dependencies=[Depends(read_key)],
        tags=["dashboard"],
    )
    async def alerts(svc: Svc) -> AlertsReport:
        """The latest epoch's accounts by health band and the last margin calls, newest first,
        with how each ``[[alerts]]`` destination took them."""
        return svc.alerts.report()
