"""The dashboard in a real browser: the example app served by uvicorn, driven by headless
chromium through selenium. Leaves a screenshot in ``test-artifacts/dashboard.png``.

Needs Debian's ``chromium`` and ``chromium-driver`` (skipped without them).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
TOKEN = "browser-test-token"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("needs chromium and chromium-driver", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def example_url(pg_url: str) -> AsyncIterator[str]:
    """The example app served by uvicorn in a subprocess, on PostgreSQL; its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "QUEUE_DATABASE_URL": pg_url,
        "ADMIN_TOKEN": TOKEN,
        "QUEUE_SHUTDOWN_GRACE": "1",
        "QUEUE_MAX_WORKERS": "4",
        "QUEUE_RETRY_BACKOFF": "0.1",
    }
    log = tempfile.TemporaryFile()
    command = [sys.executable, "-m", "uvicorn", "examples.app:app"]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_until_serving(base, process, log)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


async def wait_until_serving(base: str, process: subprocess.Popen[bytes], log: object) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log.seek(0)  # type: ignore[attr-defined]
                raise RuntimeError(f"the example app exited: {log.read().decode()}")  # type: ignore[attr-defined]
            try:
                if (await client.get(f"{base}/")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)  # another process: its port is the only signal we have
    raise TimeoutError("the example app did not start within 30 s")


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless chromium with a fresh profile and no background traffic."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    profile = tempfile.mkdtemp(prefix="tq-chromium-")
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1500,950",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# The page redraws its rows on every poll: an element found a moment ago may be gone.
REDRAWN = (NoSuchElementException, StaleElementReferenceException)


def waiter(driver: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, 20, poll_frequency=0.1, ignored_exceptions=REDRAWN)


def row_state(driver: WebDriver, task_id: int) -> str:
    badge = driver.find_element(By.CSS_SELECTOR, f'tr[data-task-id="{task_id}"] .badge')
    return badge.text.strip()


def click(driver: WebDriver, selector: str) -> None:
    """Click the element ``selector`` names, finding it again if it was redrawn."""

    def clicked(d: WebDriver) -> bool:
        d.find_element(By.CSS_SELECTOR, selector).click()
        return True

    waiter(driver).until(clicked)


async def test_dashboard_shows_tasks_live_and_cancels_one(
    example_url: str, browser: WebDriver
) -> None:
    admin = {"X-Admin-Token": TOKEN}
    async with httpx.AsyncClient(base_url=example_url, timeout=20) as client:
        for email in ("ada@example.com", "grace@example.com"):
            await client.post("/users", json={"email": email})
        order = (await client.post("/orders", json={"id": 42})).json()
        await client.post("/tasks/flaky", params={"fail_times": 5})
        long_id = (await client.post("/tasks/long", params={"seconds": 300})).json()["task_id"]
        dataset_id = (await client.post("/datasets/7/process", params={"steps": 200})).json()[
            "task_id"
        ]
        await client.post("/batches", json={"items": list(range(60))})

        browser.get(f"{example_url}/admin/")
        wait = waiter(browser)
        # The API refuses the page's first calls (no token yet): it asks for one.
        token_input = wait.until(ec.visibility_of_element_located((By.ID, "signin-token")))
        token_input.send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]").click()

        # Tasks appear, and their states change without a reload.
        wait.until(
            ec.presence_of_element_located((By.CSS_SELECTOR, f'tr[data-task-id="{long_id}"]'))
        )
        parent = order["process_task_id"]
        wait.until(lambda d: row_state(d, parent) == "done")
        wait.until(lambda d: row_state(d, long_id) == "doing")

        # Cancel the long task with its row's button.
        click(browser, f'tr[data-task-id="{long_id}"] button[data-action="cancel"]')
        wait.until(lambda d: row_state(d, long_id) == "cancelled")
        detail = (await client.get(f"/admin/api/tasks/{long_id}", headers=admin)).json()
        assert detail["state"] == "cancelled"

        # The state filter narrows the list.
        click(browser, '#state-filter .chip[data-state="cancelled"]')
        wait.until(
            lambda d: (
                [
                    r.get_attribute("data-task-id")
                    for r in d.find_elements(By.CSS_SELECTOR, "#tasks-body tr")
                ]
                == [str(long_id)]
            )
        )
        click(browser, '#state-filter .chip[data-state="all"]')

        # A running task's detail: progress bar, context, followed logs, tree.
        click(browser, f'tr[data-task-id="{dataset_id}"]')
        wait.until(ec.visibility_of_element_located((By.ID, "detail")))
        wait.until(lambda d: d.find_element(By.ID, "d-id").text == f"#{dataset_id}")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#d-progress .progress"))
        wait.until(lambda d: "dataset" in d.find_element(By.ID, "d-context").text)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#d-logs .log-line"))
        first_label = browser.find_element(By.CSS_SELECTOR, "#d-progress .progress-label").text
        wait.until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, "#d-progress .progress-label").text != first_label
            )
        )
        assert browser.find_elements(By.CSS_SELECTOR, "#d-tree .tree-node.current")

        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))

        # The servers tab lists the example's worker process, if it registers one.
        click(browser, '.tab[data-view="servers"]')
        wait.until(ec.visibility_of_element_located((By.ID, "view-servers")))

        errors = [
            entry["message"]
            for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE" and "401" not in entry["message"]
        ]
        assert errors == []
