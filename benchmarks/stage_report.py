"""Markdown for the stage profiles (:mod:`benchmarks.stages`) attached to a run's records."""

from __future__ import annotations

from typing import Any

STAGE_NOTES = {
    "draw": "seed the chunk's generator, `standard_normal((m, n))`",
    "correlate": "`z @ F.T`",
    "expm1": "`expm1(drift + scale * x)`",
    "loss_product": "`(-E^T) @ R^T` per account block",
    "threshold_count": "count losses above the running k-th largest",
    "partition": "`partition` of the chunk's losses, in place",
    "batch_stats": "the chunk's own VaR/ES (partition, sort, min, mean)",
    "merge": "concatenate held candidates, partition back to k",
    "tail_indicators": "`losses >= VaR` and its count",
    "tail_sum_product": "bool -> float, `W @ R`",
    "tree_fold": "concatenate blocks, to float64, fold",
}


def _cells(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def stage_rows(stages: dict[str, float], chunks: int, engine_s: float) -> list[str]:
    """Table of one pass: stage, seconds, ms per chunk, share, what it does."""
    total = sum(stages.values())
    head = ["stage", "s (one worker)", "ms per chunk", "share", "what"]
    lines = [_cells(head), _cells(["---"] * len(head))]
    for name, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        share = f"{100 * seconds / total:.0f} %" if total > 0 else "-"
        per_chunk = f"{1000 * seconds / chunks:.2f}"
        lines.append(_cells([name, f"{seconds:.4f}", per_chunk, share, STAGE_NOTES.get(name, "")]))
    lines.append(_cells(["**sum**", f"{total:.4f}", f"{1000 * total / chunks:.2f}", "", ""]))
    lines.append(_cells(["engine's own pass", f"{engine_s:.4f}", "", "", "not replayed"]))
    return lines


def hottest_rows(rows: list[dict[str, Any]]) -> list[str]:
    """Table of the functions with the most self time under cProfile."""
    head = ["function", "self s", "cumulative s", "calls"]
    lines = [_cells(head), _cells(["---"] * len(head))]
    for r in rows:
        fn = str(r["function"]).replace("|", "\\|")
        lines.append(_cells([f"`{fn}`", f"{r['self_s']:.4f}", f"{r['cum_s']:.4f}", r["calls"]]))
    return lines


def _check_line(prof: dict[str, Any]) -> str:
    if prof.get("replay_matches_engine", True):
        return "The replay's sums agree with the engine's own passes (within 25 %)."
    return (
        "**Warning: the replay's sums differ from the engine's own passes by more than 25 %; "
        "the engine has changed and `benchmarks/stages.py` needs updating. The cProfile tables "
        "below are of the engine itself and stay valid.**"
    )


def _pass_lines(prof: dict[str, Any], name: str, title: str, chunks: int) -> list[str]:
    return [
        f"{title}, replayed stage by stage:",
        "",
        *stage_rows(prof[f"{name}_stages_s"], chunks, prof[f"{name}_engine_s"]),
        "",
        f"{title}, the engine's own code under cProfile (self time; `@` and comparisons count "
        "towards the function that applies them):",
        "",
        *hottest_rows(prof[f"{name}_hottest"]),
        "",
    ]


def stage_section(records: list[dict[str, Any]]) -> list[str]:
    """Markdown for every record with a stage profile (the headline case by default)."""
    out: list[str] = []
    for rec in records:
        prof = rec.get("stages")
        if not prof:
            continue
        first, last = prof["range"]
        chunks = max(1, last - first)
        out += [
            f"### Where the time goes: {rec['case']}",
            "",
            f"One worker's share: chunks [{first}, {last}) of {rec['n_chunks']} "
            f"({prof['chunk_size']} scenarios each, {prof['account_blocks']} account block(s)), "
            f"on one thread with one BLAS thread; the engine runs {prof['workers']} such ranges "
            "at once. " + _check_line(prof),
            "",
            *_pass_lines(prof, "pass1", "Pass 1 (VaR/ES)", chunks),
            *_pass_lines(prof, "pass2", "Pass 2 (component ES)", chunks),
            f"Driver merges: `merge_tails` {prof['driver_merge_tails_s']:.4f} s, "
            f"`merge_components` {prof['driver_merge_components_s']:.4f} s.",
            "",
        ]
    return out
