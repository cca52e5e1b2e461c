"""Headless Chromium for the tests, driven over the DevTools protocol.

The websocket client is aiohttp's (already installed with Ray), so the browser tests need
no package beyond Debian's ``chromium``; without it they are skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

#: Names the browser goes by on Debian, Ubuntu and elsewhere.
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str | None:
    """The Chromium (or Chrome) executable, or ``None``."""
    return next((found for name in _NAMES if (found := shutil.which(name))), None)


def _flags(profile: Path) -> list[str]:
    # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start.
    return [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
    ]


def screenshot(page: Path, png: Path, *, width: int = 1280, height: int = 1500) -> None:
    """A PNG of ``page`` (a local HTML file) as a window of ``width`` × ``height`` (how
    ``docs/review_page.png`` is made)."""
    with tempfile.TemporaryDirectory(prefix="genre-chromium-") as profile:
        subprocess.run(
            [
                chromium(),
                *_flags(Path(profile)),
                f"--window-size={width},{height}",
                f"--screenshot={png.resolve()}",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )


class Browser:
    """One headless Chromium; :meth:`open` loads a page and returns a :class:`Tab`.

    Downloads go to ``downloads``. Use as a context manager: the browser's process group
    is ended on exit.
    """

    def __init__(self, work: Path):
        self.downloads = work / "downloads"
        self.downloads.mkdir(parents=True, exist_ok=True)
        profile = work / "profile"
        self.proc = subprocess.Popen(
            [chromium(), *_flags(profile), "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (port_file.exists() and len(port_file.read_text().split()) == 2):
            if self.proc.poll() is not None or time.time() > deadline:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port, path = port_file.read_text().split()
        self.url = f"ws://127.0.0.1:{port}{path}"
        self.loop = asyncio.new_event_loop()
        self.session = self.ws = None
        self._id = 0
        self.loop.run_until_complete(self._connect())

    async def _connect(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(self.url, max_msg_size=0)

    async def _send(self, method: str, params: dict, target: str | None) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if target:
            message["sessionId"] = target
        await self.ws.send_str(json.dumps(message))
        while True:  # events arriving before the answer are not needed here
            reply = json.loads((await self.ws.receive(timeout=60)).data)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def send(self, method: str, target: str | None = None, **params) -> dict:
        return self.loop.run_until_complete(self._send(method, params, target))

    def open(self, page: Path) -> Tab:
        self.send(
            "Browser.setDownloadBehavior",
            behavior="allow",
            downloadPath=str(self.downloads),
        )
        target = self.send("Target.createTarget", url=page.resolve().as_uri())["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        tab = Tab(self, session)
        tab.wait_for("document.readyState === 'complete'")
        return tab

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.loop.run_until_complete(self.ws.close())
            self.loop.run_until_complete(self.session.close())
            self.loop.close()
            self.ws = None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Tab:
    """A page open in the browser: evaluate JavaScript in it as a user's action."""

    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session

    def js(self, expression: str):
        """The value of ``expression``, run as if from a user's gesture (so a download
        it starts is allowed)."""
        result = self.browser.send(
            "Runtime.evaluate",
            self.session,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
            userGesture=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout_s: float = 30.0) -> None:
        deadline = time.time() + timeout_s
        while not self.js(expression):
            if time.time() > deadline:
                raise TimeoutError(f"still false after {timeout_s:.0f} s: {expression}")
            time.sleep(0.1)
