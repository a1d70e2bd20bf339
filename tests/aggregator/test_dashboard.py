"""The dashboard in a real headless Chromium (Debian's, driven by Playwright; nothing is
downloaded), and the self-contained HTML report."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from aggregator.service.launcher import Server, omnimargin_binary

CHROMIUM = Path("/usr/bin/chromium")
ACCOUNT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_dashboard_renders_its_charts_without_console_errors(
    service: Server, tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} missing: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(service.url + "/", wait_until="load")
            for chart in ("losses", "by_chain", "by_asset"):
                page.wait_for_selector(f"#chart-{chart} svg", timeout=60_000)
            page.locator(f"#accounts tr:has-text('{ACCOUNT}')").click()
            page.wait_for_function(
                f"document.getElementById('acct-title').textContent.includes('{ACCOUNT}')",
                timeout=60_000,
            )
            page.wait_for_function(
                "[...document.querySelectorAll('.chart')].every(c => c.querySelector('svg')"
                " && c.querySelector('svg').getBoundingClientRect().width > 200)",
                timeout=60_000,
            )
            chains = page.locator("#chains tbody tr").all_inner_texts()
            loss_svg = page.inner_html("#chart-losses")
            sizes = page.eval_on_selector_all(
                ".chart svg", "els => els.map(e => e.getBoundingClientRect().width)"
            )
            meta = page.inner_text("#meta")
            page.wait_for_function(
                "document.getElementById('fund').textContent.includes('insurance fund')",
                timeout=60_000,
            )
            fund = page.inner_text("#fund")
            account_row = page.locator(f"#accounts tr:has-text('{ACCOUNT}')").inner_text()
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert len(chains) == 3 and all("ok" in row for row in chains)
    assert "VaR" in loss_svg and "ES" in loss_svg  # the legend of the VaR and ES lines
    assert len(sizes) == 3 and all(w > 200 for w in sizes)
    assert re.search(r"epoch \d+", meta)
    # the insurance fund (the devnet's 50,000 USDC) and the locked / unlocked split of the row
    assert re.search(r"insurance fund 0x[0-9a-fA-F]{40}: \d{2},\d{3}", fund), fund
    assert "bad debt" in fund
    assert account_row.count("\t") >= 9 and "\tno\t" in account_row  # not liquidatable
    assert (tmp_path / "dashboard.png").stat().st_size > 20_000


def test_report_is_one_self_contained_html_file(service: Server, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    run = subprocess.run(
        [
            omnimargin_binary(),
            "report",
            ACCOUNT,
            "--out",
            str(out),
            "--config",
            str(service.config_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    html = out.read_text()
    assert html.count("<svg") == 3 and ACCOUNT in html
    for fetches in ("<script", "<link", "src=", "@import"):
        assert fetches not in html  # nothing loaded from elsewhere
    assert set(re.findall(r"url\(([^)]*)\)", html)) <= set(re.findall(r'id="([^"]+)"', html)) | {
        "#" + i for i in re.findall(r'id="([^"]+)"', html)
    }  # only the SVGs' own clip paths
    assert re.search(r"snapshot hash <code>0x[0-9a-f]{64}</code>", html)
    assert "Approvals and liquidation steps" in html and "backs margin" in html
    bad = subprocess.run(
        [
            omnimargin_binary(),
            "report",
            "0xzz",
            "--out",
            str(out),
            "--config",
            str(service.config_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: account:")
