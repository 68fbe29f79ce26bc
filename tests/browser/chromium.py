"""A headless Chromium driven over the Chrome DevTools protocol, for the browser tests.

Only what the tests need: open a page and wait for its load event, run JavaScript, move
the mouse, press keys, click, resize the viewport, take screenshots, and collect what a
reader's console would show (uncaught exceptions, console errors, failed loads). The
websocket is tornado's client, which the book's Jupyter dependencies already install.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tornado.websocket import websocket_connect

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-port=0",
)


def find_chromium() -> str | None:
    """``$KDALIB_CHROMIUM``, else Debian's ``chromium``, else ``chromium-browser`` or ``google-chrome``."""
    given = os.environ.get("KDALIB_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class ProtocolError(RuntimeError):
    pass


class Browser:
    """One Chromium process with one page; ``close()`` ends the process and removes its profile."""

    def __init__(self, executable: str, timeout: float = 30.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="kdalib-chromium-")
        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = self._devtools_port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as reply:
            pages = [t for t in json.load(reply) if t.get("type") == "page"]
        if not pages:
            raise ProtocolError("Chromium started without a page target")
        self.loop = asyncio.new_event_loop()
        url = pages[0]["webSocketDebuggerUrl"]

        async def connect():
            return await websocket_connect(url, max_message_size=512 * 2**20)

        self.ws = self._run(connect())
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")

    def _devtools_port(self) -> int:
        marker = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ProtocolError(f"Chromium exited with code {self.process.returncode} while starting")
            if marker.is_file() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.05)
        raise ProtocolError(f"Chromium wrote no DevToolsActivePort within {self.timeout:.0f}s")

    def _run(self, awaitable, timeout: float | None = None):
        async def wrapped():
            return await asyncio.wait_for(awaitable, timeout or self.timeout)

        return self.loop.run_until_complete(wrapped())

    def _read(self, timeout: float | None = None) -> dict[str, Any]:
        async def read():
            return await self.ws.read_message()

        message = self._run(read(), timeout)
        if message is None:
            raise ProtocolError("the DevTools connection closed")
        return json.loads(message)

    def send(self, method: str, **params) -> dict[str, Any]:
        self.next_id += 1
        call_id = self.next_id

        async def write():
            await self.ws.write_message(json.dumps({"id": call_id, "method": method, "params": params}))

        self._run(write())
        while True:
            message = self._read()
            if message.get("id") == call_id:
                if "error" in message:
                    raise ProtocolError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for_event(self, method: str, timeout: float | None = None) -> dict[str, Any]:
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} event within {timeout or self.timeout:.0f}s")
            message = self._read(left)
            if message.get("method") == method:
                return message
            self.events.append(message)

    # -- what the tests use ------------------------------------------------------------------

    def open(self, url: str) -> None:
        """Load ``url`` and wait for its load event; forget the events of earlier pages."""
        self.events.clear()
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise ProtocolError(f"{url}: {result['errorText']}")
        if result.get("loaderId"):
            self.wait_for_event("Page.loadEventFired")
        else:  # the same document at another #fragment: no new load
            self.wait_for_event("Page.navigatedWithinDocument")

    def js(self, expression: str) -> Any:
        """Evaluate ``expression`` in the page (promises are awaited) and return its JSON value."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise ProtocolError(f"{expression[:80]}: {details.get('exception', {}).get('description', details)}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"not true within {timeout:.0f}s: {expression}")

    def console_errors(self) -> list[str]:
        """What the page's console shows as errors so far: exceptions, console.error, failed loads."""
        self.js("0")  # drain the events that arrived with the page
        errors = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                entry = params["entry"]
                errors.append(f"{entry.get('text')} {entry.get('url', '')}".strip())
        return errors

    def viewport(self, width: int, height: int = 900) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=width < 600
        )

    def mouse(self, kind: str, x: float, y: float, **extra) -> None:
        self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    def click(self, x: float, y: float) -> None:
        self.mouse("mouseMoved", x, y)
        self.mouse("mousePressed", x, y, button="left", clickCount=1)
        self.mouse("mouseReleased", x, y, button="left", clickCount=1)

    def tap(self, x: float, y: float) -> None:
        """A finger's tap (touch events, then the click), as on a phone with touch emulation on."""
        self.send("Input.dispatchTouchEvent", type="touchStart", touchPoints=[{"x": x, "y": y}])
        self.send("Input.dispatchTouchEvent", type="touchEnd", touchPoints=[])

    def press_tab(self) -> None:
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key="Tab", code="Tab", windowsVirtualKeyCode=9)

    def screenshot(self, path: Path, max_height: int = 8000) -> None:
        """The whole page (at most ``max_height`` px) as a PNG."""
        size = self.js("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        clip = {"x": 0, "y": 0, "width": size[0], "height": min(size[1], max_height), "scale": 1}
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".png.tmp")
        tmp.write_bytes(base64.b64decode(shot["data"]))
        tmp.replace(path)

    def close(self) -> None:
        try:
            self.loop.run_until_complete(asyncio.sleep(0))
            self.ws.close()
            self.loop.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            shutil.rmtree(self.profile, ignore_errors=True)
