"""Screenshots of the playground for the README, made the way a user sees it: a real server
with the embedded model, Debian's chromium driven by Playwright, a few generations, then the
page at desktop and phone widths.

Usage: .venv/bin/python scripts/screenshots.py [--out docs] [--chromium /usr/bin/chromium]
Writes OUT/playground-desktop.png and OUT/playground-phone.png.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, ViewportSize, sync_playwright

from limner.config import Settings
from limner.server.app import create_app
from limner.server.runner import LimnerServer, uvicorn_config

PROMPTS = ("a red fox sitting in the snow", "a lighthouse on a rocky coast at night",
           "a bowl of ramen with an egg")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(base: str, timeout_s: float = 120) -> None:
    """The embedded model loads in the background; the page is only useful once it has."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{base} did not become healthy in {timeout_s:.0f} s")


def generate(page: Page, prompt: str) -> None:
    before = page.locator("#gallery img").count()
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("Prompt", exact=True).press("Enter")
    page.locator("#gallery img").nth(before).wait_for(timeout=120_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(port=free_port(), data_dir=Path(data_dir))
        app = create_app(settings)
        server = LimnerServer(uvicorn_config(app, settings), app)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{settings.port}"
        try:
            wait_healthy(base)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium)
                shots = (("desktop", ViewportSize(width=1280, height=860), PROMPTS),
                         ("phone", ViewportSize(width=390, height=844), PROMPTS[:2]))
                for name, viewport, prompts in shots:
                    page = browser.new_context(viewport=viewport).new_page()
                    page.goto(base + "/")
                    page.wait_for_selector("body[data-ready]", state="attached")
                    page.get_by_label("Size", exact=True).select_option("512x512")
                    for prompt in prompts:
                        generate(page, prompt)
                    page.get_by_label("Prompt", exact=True).fill(prompts[-1])
                    page.evaluate("document.activeElement.blur()")
                    path = args.out / f"playground-{name}.png"
                    page.screenshot(path=path, full_page=name == "phone")
                    print(f"wrote {path}")
                    page.context.close()
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=30)


if __name__ == "__main__":
    main()
