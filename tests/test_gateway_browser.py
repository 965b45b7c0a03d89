"""A real browser plays the page: headless Chromium (Debian's package, driven by Selenium through
Debian's chromedriver) loads `/` from the gateway, synthesizes through `POST /v1/audio/speech`, and
the page's own counters must show audio received, scheduled in its AudioContext and played out
(the buffers' `ended` events fire only after the samples went through the audio graph).
The live mode (text typed into a WebSocket session) is driven the same way.
"""

from __future__ import annotations

import shutil
import tempfile
import time

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from barkstream.services.gateway.config import GatewayConfig

from .gateway_helpers import GatewayThread

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def gateway(embedded_server):
    gw = GatewayThread(embedded_server.target, GatewayConfig(http_host="127.0.0.1",
                                                             voice_aliases="alloy=v2/en_speaker_0"))
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="barkstream-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def stats(driver) -> dict:
    return driver.execute_script("const s = window.barkstream.stats;"
                                 "return Object.assign({}, s, {contextState: s.contextState});")


def wait_for(driver, predicate, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = stats(driver)
        if s.get("error"):
            raise AssertionError(f"the page reports an error: {s['error']}")
        if predicate(s):
            return s
        time.sleep(0.1)
    raise AssertionError(f"timed out; page stats: {stats(driver)}")


def test_page_synthesizes_and_plays(gateway, server, browser):
    browser.get(gateway.url + "/")
    assert browser.title == "barkstream"
    wait_for(browser, lambda s: True)
    browser.execute_script("document.getElementById('text').value = arguments[0];",
                           "Hello world, my dog likes pizza and music.")
    browser.find_element("id", "speak").click()
    s = wait_for(browser, lambda s: s["done"] and s["samplesPlayed"] > 0)
    assert s["bytes"] > 0 and s["samplesScheduled"] == s["bytes"] // 2
    assert s["firstAudioMs"] is not None and s["firstAudioMs"] > 0
    assert s["contextState"] == "running"
    text = browser.find_element("id", "stats").text
    assert "time to first audio" in text and " ms" in text
    # Every scheduled sample is eventually played out.
    wait_for(browser, lambda s: s["samplesPlayed"] == s["samplesScheduled"], timeout=60)


def test_live_mode_speaks_as_you_type(gateway, server, browser):
    from selenium.webdriver.common.keys import Keys

    browser.get(gateway.url + "/")
    box = browser.find_element("id", "text")
    box.clear()
    browser.find_element("id", "live").click()
    wait_for(browser, lambda s: s["state"].startswith("live"))
    box.send_keys("Hello world, my dog likes pizza.")
    box.send_keys(Keys.ENTER)  # flush: speak what is typed so far
    s = wait_for(browser, lambda s: s["samplesPlayed"] > 0 and s["segments"])
    assert "Hello" in " ".join(s["segments"]) and s["contextState"] == "running"
    browser.find_element("id", "live").click()  # close: the rest is spoken, then the summary
    wait_for(browser, lambda s: s["done"])
