"""Opt-in: the README screenshot of the console showing the running flash-sale demo, taken during the sale.

Runs ``aiwatch demo`` with the console (reading the demo's Prometheus, or scraping the services without one), waits
until the flash sale has run for a while, opens the console in a real headless Chromium (Playwright, as in the
console's browser test), waits for the charts, writes the screenshot and stops the demo with SIGINT, as Ctrl-C would.

    PYTHONPATH=$PWD python scripts/screenshot_demo.py                      # writes docs/images/console.png
    PYTHONPATH=$PWD python scripts/screenshot_demo.py --out /tmp/demo.png --duration 60 --into-sale 16

Needs the console extra, playwright (the dev extra) and chromium (scripts/setup-system.sh). About
``0.35 * duration + into-sale`` seconds plus start-up; not part of the test suite.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.console.browser import chromium, wait_for  # noqa: E402
from tests.servers import free_port, python_env  # noqa: E402

CHARTS = ("document.querySelectorAll('[data-testid=\"stVegaLiteChart\"] canvas, "
          "[data-testid=\"stVegaLiteChart\"] svg').length")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "console.png")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per demo cycle (default 60)")
    parser.add_argument("--into-sale", type=float, default=16.0,
                        help="seconds of flash sale before the screenshot (default 16)")
    args = parser.parse_args()
    port = free_port()
    demo = subprocess.Popen([sys.executable, "-m", "aiwatch", "demo", "--duration", str(args.duration),
                             "--console-port", str(port)], env=python_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert demo.stdout is not None
    lines: list[str] = []

    def read_until(prefix: str) -> bool:
        for line in demo.stdout:  # type: ignore[union-attr]
            lines.append(line)
            print(line, end="", flush=True)
            if line.startswith(prefix):
                return True
        print(f"the demo stopped before {prefix!r}:\n" + "".join(lines), file=sys.stderr)
        return False

    try:
        # The console's embedded scraper starts with the first browser session: open the page as the normal stage
        # starts, so the charts show normal traffic, then the sale.
        if not read_until("stage normal"):
            return 1
        with chromium(f"http://127.0.0.1:{port}/", width=1400, height=1600) as page:
            wait_for(page, "document.body.innerText.includes('Latency: where the time goes')", timeout=90)
            if not read_until("stage flash sale"):
                return 1
            time.sleep(args.into_sale)
            wait_for(page, f"{CHARTS} >= 5", timeout=60)
            wait_for(page, "document.body.innerText.includes('model share')", timeout=60)
            time.sleep(4.0)  # the console redraws every 3 s: let the latest redraw finish
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out)
        size = args.out.stat().st_size
        print(f"wrote {args.out} ({size / 1000:.0f} KB)")
        return 0 if size < 500_000 else 2
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()


if __name__ == "__main__":
    sys.exit(main())
