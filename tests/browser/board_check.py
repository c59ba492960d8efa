#!/usr/bin/env python3
"""Drives a real headless Chromium over the live board of a running `lienthong serve`.

Run by tests/e2e/board.rs, which starts the server, makes a dossier overdue and then talks to
this script over stdin/stdout (one JSON object per line):

  script -> test   {"event": "loaded"}              the board shows the overdue dossier
  test -> script   {"expect": "<dossier code>"}     a dossier the test has just submitted
  script -> test   {"ok": true, ...} or {"ok": false, "error": "..."}   the verdict, last line

What it checks, failing on the first miss: the board page (Vietnamese first, 1920x1080) lists
the overdue dossier among the overdue steps; the dossier submitted after the page loaded appears
WITHOUT a reload (a marker set on `window` survives: the live stream, not a navigation, brought
it); the dossier's page shows its process-control slip; at 1366x768 the page does not scroll
sideways; `lang=en` gives the English labels; and the browser logged no console error on any
page (chromedriver's `goog:loggingPrefs` browser log, level SEVERE: script errors, failed
loads). Screenshots go to --artefacts.

Uses /usr/bin/chromium and /usr/bin/chromedriver (Debian packages; scripts/chromium.sh): a
missing one is an error, never a skip.
"""

import argparse
import json
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def say(obj):
    print(json.dumps(obj), flush=True)


class Check:
    def __init__(self, args):
        self.args = args
        self.errors = []
        self.shots = []
        for path in (CHROMIUM, CHROMEDRIVER):
            if not os.access(path, os.X_OK):
                raise RuntimeError(
                    f"{path} not found: run scripts/chromium.sh (scripts/test.sh does)"
                )
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for a in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1920,1080",
            "--lang=vi",
            "--hide-scrollbars",
        ):
            options.add_argument(a)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.set_page_load_timeout(args.timeout_s)
        # Every request of the page (the page, its script, its live stream) carries the token,
        # as a wall screen's browser would after its Basic sign-in.
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders",
            {"headers": {"Authorization": f"Bearer {args.token}"}},
        )
        self.screen(1920, 1080)

    def screen(self, width, height):
        """The page's viewport exactly `width` x `height` CSS pixels (a window's size would
        include the browser's own bars)."""
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def console(self, page):
        """Console errors since the last call, kept with the page they came from."""
        for entry in self.driver.get_log("browser"):
            if entry.get("level") == "SEVERE":
                self.errors.append(f"{page}: {entry.get('message')}")

    def wait(self, what, predicate):
        try:
            return WebDriverWait(self.driver, self.args.timeout_s, poll_frequency=0.2).until(
                lambda d: predicate(d)
            )
        except Exception as e:
            raise RuntimeError(
                f"timed out after {self.args.timeout_s}s waiting for {what} on {self.driver.current_url}"
            ) from e

    def shot(self, name):
        path = os.path.join(self.args.artefacts, name)
        if not self.driver.save_screenshot(path):
            raise RuntimeError(f"could not save the screenshot {path}")
        self.shots.append(path)

    def js(self, script):
        return self.driver.execute_script(script)

    def run(self):
        d = self.driver
        code = self.args.dossier
        overdue_row = f'section.attention tr.overdue[data-dossier="{code}"]'

        # 1. The wall screen, Vietnamese: the overdue dossier among the overdue steps.
        d.get(self.args.board)
        self.wait(f"the overdue row of {code}", lambda d: d.find_elements(By.CSS_SELECTOR, overdue_row))
        if self.js("return document.documentElement.lang") != "vi":
            raise RuntimeError("the board is not in Vietnamese by default")
        over = d.find_element(By.CSS_SELECTOR, overdue_row + " td:last-child").text.strip()
        if not over:
            raise RuntimeError(f"the overdue row of {code} does not say by how much")
        body = d.find_element(By.TAG_NAME, "body").text
        for label in ("Quá hạn", "Tỉ lệ đúng hạn", "Độ trễ dữ liệu"):
            if label not in body:
                raise RuntimeError(f"`{label}` is not on the Vietnamese board")
        self.wait("the live stream to open", lambda d: "lost" not in d.find_element(By.ID, "live-status").get_attribute("class"))
        self.console("board (vi, 1920x1080)")

        # 2. Live: a dossier submitted after the page loaded appears without a reload.
        self.js("window.__boardMarker = 42;")
        say({"event": "loaded", "overdue_by": over})
        line = sys.stdin.readline()
        if not line:
            raise RuntimeError("the test closed stdin before naming the new dossier")
        fresh = json.loads(line)["expect"]
        self.wait(
            f"{fresh} to appear without a reload",
            lambda d: d.find_elements(By.CSS_SELECTOR, f'[data-dossier="{fresh}"]'),
        )
        if self.js("return window.__boardMarker") != 42:
            raise RuntimeError("the page was reloaded: the new dossier did not come by the live stream")
        self.console("board, after the live update")
        self.shot("board.png")

        # 3. The dossier's timeline (process-control slip).
        d.find_element(By.CSS_SELECTOR, f'{overdue_row} a').click()
        self.wait("the process-control slip", lambda d: d.find_elements(By.CSS_SELECTOR, "table.slip tbody tr"))
        text = d.find_element(By.TAG_NAME, "body").text
        for label in ("Phiếu kiểm soát quá trình", code):
            if label not in text:
                raise RuntimeError(f"`{label}` is not on the dossier page")
        self.console("dossier page")
        self.shot("dossier.png")

        # 4. A laptop: no sideways scrolling.
        self.screen(1366, 768)
        d.get(self.args.board)
        self.wait(f"the overdue row of {code} (laptop)", lambda d: d.find_elements(By.CSS_SELECTOR, overdue_row))
        overflow = self.js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        if overflow > 1:
            raise RuntimeError(f"at 1366x768 the board is {overflow}px wider than the window")
        self.console("board (laptop)")
        self.shot("board-laptop.png")

        # 5. English.
        sep = "&" if "?" in self.args.board else "?"
        d.get(self.args.board + sep + "lang=en")
        self.wait("the English board", lambda d: d.find_elements(By.CSS_SELECTOR, overdue_row))
        if self.js("return document.documentElement.lang") != "en":
            raise RuntimeError("lang=en did not give an English page")
        body = d.find_element(By.TAG_NAME, "body").text
        for label in ("Overdue", "On-time rate", "Projection lag"):
            if label not in body:
                raise RuntimeError(f"`{label}` is not on the English board")
        self.console("board (en)")

        if self.errors:
            raise RuntimeError("console errors: " + " | ".join(self.errors))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--board", required=True, help="the board's URL (with ?now= if any)")
    p.add_argument("--dossier", required=True, help="the code of the dossier made overdue")
    p.add_argument("--artefacts", required=True, help="folder for the screenshots")
    p.add_argument("--token", required=True, help="a bearer token of the server's auth file")
    p.add_argument("--timeout-s", type=float, default=30.0)
    args = p.parse_args()
    os.makedirs(args.artefacts, exist_ok=True)
    check = None
    try:
        check = Check(args)
        check.run()
        say({"ok": True, "screenshots": check.shots, "console_errors": []})
        return 0
    except Exception as e:  # the verdict line carries every failure
        say(
            {
                "ok": False,
                "error": f"{type(e).__name__}: {e}",
                "console_errors": check.errors if check else [],
                "screenshots": check.shots if check else [],
            }
        )
        return 1
    finally:
        if check is not None:
            check.driver.quit()


if __name__ == "__main__":
    sys.exit(main())
