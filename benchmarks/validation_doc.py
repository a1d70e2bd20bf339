"""Writes ``docs/VALIDATION.md`` and its figures from the results of a validation run."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.backtest_plots import convergence_figure, pnl_figure, traffic_light_figure
from benchmarks.validation_convergence import ConvergenceCase
from benchmarks.validation_text import METHOD, MODEL_NAMES, recommendation_text

Results = dict[str, dict[str, dict[str, Any]]]

#: (label, first day, last day): the worst P&L day of each portfolio in [first, last]
STRESS = (
    ("COVID crash", "2020-03-12", "2020-03-12"),
    ("LUNA/UST collapse, May 2022", "2022-05-01", "2022-05-31"),
    ("FTX collapse, Nov 2022", "2022-11-01", "2022-11-30"),
    ("USDC depeg (SVB)", "2023-03-11", "2023-03-11"),
)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_").replace("__", "_")


def _p(x: float) -> str:
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def summary_table(results: Results) -> list[str]:
    head = (
        "| portfolio | model | days | exceptions | expected | Kupiec p | Christoffersen p "
        "| cond. coverage p | 250-day blocks (exceptions) | days in red | ES Z2 (p) |"
    )
    lines = [head, "|" + " --- |" * 11]
    for name, by_model in results.items():
        for model, r in by_model.items():
            tl = r["traffic_light"]
            blocks = " ".join(f"{w['zone'][0].upper()}{w['exceptions']}" for w in tl["windows"])
            es = r["es_backtest"]
            lines.append(
                f"| {name} | {MODEL_NAMES[model]} | {r['observations']} | {r['exceptions']} | "
                f"{r['expected_exceptions']:.1f} | {_p(r['kupiec_pvalue'])} | "
                f"{_p(r['christoffersen_pvalue'])} | {_p(r['conditional_coverage_pvalue'])} | "
                f"{blocks} | {tl['rolling_days']['red']} | {es['z2']:.2f} ({_p(es['pvalue'])}) |"
            )
    return lines


def _worst_day(report: dict[str, Any], first: str, last: str) -> dict[str, Any] | None:
    rows = [r for r in report["series"] if first <= r["date"] <= last]
    return min(rows, key=lambda r: r["pnl"]) if rows else None


def stress_table(results: Results) -> list[str]:
    lines = [
        "| event | portfolio | day | P&L USD | "
        + " | ".join(f"{MODEL_NAMES[m]} VaR / ES" for m in MODEL_NAMES)
        + " |",
        "|" + " --- |" * (4 + len(MODEL_NAMES)),
    ]
    for label, first, last in STRESS:
        for name, by_model in results.items():
            day = _worst_day(next(iter(by_model.values())), first, last)
            if day is None:
                lines.append(f"| {label} | {name} | not covered (history too short) |" + " |" * 4)
                continue
            cells = []
            for model in MODEL_NAMES:
                row = next(r for r in by_model[model]["series"] if r["date"] == day["date"])
                mark = " **exceeded**" if row["exception"] else ""
                cells.append(f"{row['var']:,.0f} / {row['es']:,.0f}{mark}")
            lines.append(
                f"| {label} | {name} | {day['date']} | {day['pnl']:,.0f} | {' | '.join(cells)} |"
            )
    return lines


def stress_summary(results: Results) -> list[str]:
    """How many of the event days each model covered (loss within VaR)."""
    lines = []
    for model in MODEL_NAMES:
        hit = total = 0
        for _, first, last in STRESS:
            for by_model in results.values():
                day = _worst_day(by_model[model], first, last)
                if day is not None and day["pnl"] < 0:
                    total += 1
                    hit += bool(day["exception"])
        lines.append(f"- {MODEL_NAMES[model]}: VaR exceeded on {hit} of {total} loss days.")
    return lines


def convergence_section(cases: list[ConvergenceCase], out: Path) -> list[str]:
    lines: list[str] = []
    for case in cases:
        png = f"convergence_{slug(case.title)}.png"
        (out / png).write_bytes(convergence_figure(case.points, case.title))
        var_ref, es_ref = case.reference
        lines += [
            f"### {case.title}",
            "",
            f"Reference ({case.reference_method}): VaR {var_ref:,.0f} USD, ES {es_ref:,.0f} USD.",
            "",
            "| scenarios | MC VaR RMSE | engine VaR s.e. | Sobol VaR RMSE | MC ES RMSE | "
            "engine ES s.e. | Sobol ES RMSE | ES RMSE MC / Sobol |",
            "|" + " --- |" * 8,
        ]
        mc = [p for p in case.points if p.sampler == "mc"]
        qmc = {p.scenarios: p for p in case.points if p.sampler == "sobol"}
        for p in mc:
            q = qmc[p.scenarios]
            lines.append(
                f"| {p.scenarios:,} | {p.var_rmse:,.1f} | {p.var_stderr:,.1f} | "
                f"{q.var_rmse:,.1f} | {p.es_rmse:,.1f} | {p.es_stderr:,.1f} | {q.es_rmse:,.1f} | "
                f"{p.es_rmse / max(q.es_rmse, 1e-9):,.1f}x |"
            )
        lines += ["", f"![convergence: {case.title}](validation/{png})", ""]
    return lines


def figures(results: Results, recommended: str, out: Path) -> list[str]:
    lines = []
    for name, by_model in results.items():
        s = slug(name)
        report = by_model[recommended]
        title = f"{name}: daily P&L against {MODEL_NAMES[recommended]} VaR and ES (99 %)"
        (out / f"pnl_{s}.png").write_bytes(pnl_figure(report, title))
        labels = {MODEL_NAMES[m]: r for m, r in by_model.items()}
        tl_title = f"{name}: exceptions in the last 250 days, Basel zones"
        (out / f"traffic_{s}.png").write_bytes(traffic_light_figure(labels, tl_title))
        lines += [
            f"### {name}",
            "",
            f"![{name} P&L](validation/pnl_{s}.png)",
            "",
            f"![{name} traffic light](validation/traffic_{s}.png)",
            "",
        ]
    return lines


def write_doc(
    docs: Path,
    results: Results,
    cases: list[ConvergenceCase],
    timings: dict[str, Any],
    supplementary: tuple[str, ...] = (),
) -> None:
    """Write ``docs/VALIDATION.md`` and the PNGs under ``docs/validation/``."""
    out = docs / "validation"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    scored = {k: v for k, v in results.items() if k not in supplementary}
    recommended, why = recommendation_text(scored)
    first = next(iter(next(iter(results.values())).values()))
    ends = sorted({r["end"] for m in results.values() for r in m.values()})
    per_day_ms = 1000 * timings["backtests_s"] * timings["workers"] / max(timings["days"], 1)
    lines = [
        "# Model validation: VaR and ES backtests",
        "",
        "Generated by `python -m benchmarks.validation` (do not edit by hand) from the real "
        "daily closes in `aggregator/data/prices`.",
        f"P&L days from 2020-01-01 to {ends[-1]}, VaR and ES at {first['alpha']:.0%} over "
        f"{first['horizon_days']} day, a {first['window']}-day calibration window before each "
        f"forecast, {first['scenarios']:,} engine scenarios a day (seed {first['seed']} + day).",
        "",
        "## Recommendation",
        "",
        *why,
        "",
        "## Results",
        "",
        f"{', '.join(supplementary)}: the stablecoin leg on its own, shown for the depeg and "
        "left out of the recommendation."
        if supplementary
        else "",
        "",
        "Blocks: consecutive 250-day windows counted back from the last day (G green, Y yellow, "
        "R red, then the exceptions in it); days in red: rolling 250-day windows ending in the "
        "red zone. ES Z2 > 0 means realised tail losses beyond the forecast ES.",
        "",
        *summary_table(results),
        "",
        "## Stress days",
        "",
        "The worst day of each portfolio in each event (the realised P&L and each model's "
        "forecast made the evening before; losses positive).",
        "",
        *stress_summary(results),
        "",
        *stress_table(results),
        "",
        *METHOD,
        "",
        "## Figures",
        "",
        *figures(results, recommended, out),
        "## Convergence of the engine",
        "",
        "Root-mean-square error of VaR and ES over 8 independent runs at each scenario count, "
        "engine pseudo-random draws (`mc`, with the engine's own batch-means standard error) "
        "against scrambled Sobol points (`scipy.stats.qmc.Sobol`, `omnimargin backtest "
        "--sampler sobol`), each model calibrated on the last 500 days.",
        "",
        *convergence_section(cases, out),
        "## Run",
        "",
        f"{timings['days']:,} forecast days ({timings['runs']} backtests) in "
        f"{timings['backtests_s']} s on "
        f"{timings['workers']} worker processes ({per_day_ms:.1f} ms per day and core: "
        "calibration, 20,000 scenarios, VaR/ES), convergence study "
        f"{timings['convergence_s']} s; {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, NumPy {np.__version__}.",
        "",
    ]
    (docs / "VALIDATION.md").write_text("\n".join(lines))
