"""Save SVG screenshots of `slurmml tui` at 120x40, read-only, from the registry in $SLURMML_HOME.

    python scripts/tui_screenshot.py OUT_DIR [--sweep ID] [--mark N]

Writes runs.svg, detail.svg (first run, metrics tab) and compare.svg (the first N runs, N=3 by default).
The README's picture of the compare view was made this way, from the example sweep on the dev cluster.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from slurmml.tui.app import SlurmmlApp
from slurmml.tui.source import RegistrySource


async def shoot(out: Path, sweep: str | None, marks: int) -> None:
    app = SlurmmlApp(RegistrySource.open(poll=False), None, read_only=True, refresh_s=0, sweep=sweep)
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.save_screenshot(str(out / "runs.svg"))
        await pilot.press("home", *["space"] * marks, "c")
        await pilot.pause(0.5)
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.save_screenshot(str(out / "compare.svg"))
        await pilot.press("escape", "home", "enter")
        await pilot.pause(0.5)
        await app.workers.wait_for_complete()
        await pilot.press("3")
        await pilot.pause()
        app.save_screenshot(str(out / "detail.svg"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--sweep")
    parser.add_argument("--mark", type=int, default=3, help="runs to compare (default 3)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(shoot(args.out, args.sweep, args.mark))


if __name__ == "__main__":
    main()
