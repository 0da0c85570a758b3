"""report.html of a study and of a sweep in a real browser (headless Chromium driven by
Selenium) from a small phone's width to a wide desktop's: every image loads, nothing is wider than the window, the console stays
clean and no request leaves the file. Screenshots go to the test's temporary folder.

Without Chromium and its driver the test is skipped, unless TRANSFERLAB_REQUIRE_BROWSER is
set (`.ci/run` installs both and sets it, so in CI it always runs)."""

import os
import shutil

import pytest

from transferlab import reports, study
from transferlab.config import StudyConfig
from transferlab.sweep import sweep_from_dict

WIDTHS = (360, 420, 1400, 1920)


def _driver():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: pip install -e '.[dev]'")
    browser, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (browser and driver):
        if os.environ.get("TRANSFERLAB_REQUIRE_BROWSER"):
            pytest.fail("chromium and chromedriver are required here (apt-get install chromium chromium-driver)")
        pytest.skip("no chromium/chromedriver on this machine (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


STUDY = {
    "name": "browser", "seed": 3, "repeats": 3, "source_repeats": 2,
    "source": {"kind": "blobs", "seed": 1, "n_samples": 200, "n_train": 100},
    "target": {"kind": "blobs", "seed": 2, "n_samples": 200, "n_train": 100},
    "training": {"epochs": 4},
    "strategies": [{"name": "standalone"}, {"name": "transfer", "freeze": 0}, {"name": "transfer", "freeze": 2},
                   {"name": "finetune", "lr": 0.1}],
}


@pytest.fixture(scope="module")
def report_files(tmp_path_factory):
    """A small study with two source models (so the report carries warnings and a verdict),
    and a small sweep (its own page)."""
    root = tmp_path_factory.mktemp("browser")
    study.run_study(StudyConfig.model_validate(STUDY), root / "study")
    reports.build_report(root / "study")
    sweep = sweep_from_dict({**STUDY, "name": "browser-sweep", "sweep": {"target.n_train": [20, 100]}})
    study.run_sweep(sweep, root / "sweep")
    reports.build_report(root / "sweep")
    return {"study": root / "study" / "report.html", "sweep": root / "sweep" / "report.html"}


@pytest.mark.parametrize("page", ["study", "sweep"])
def test_the_report_works_in_a_real_browser_from_phone_to_desktop_width(report_files, page, tmp_path):
    """One browser per page, loaded afresh at each width (its logs cover that load alone)."""
    import base64
    import json

    driver = _driver()
    try:
        for width in WIDTHS:
            driver.set_window_size(width, 900)
            driver.get(report_files[page].as_uri())
            inner = driver.execute_script("return window.innerWidth")
            images = driver.execute_script(
                "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0, "
                "i.getBoundingClientRect().right])")
            assert images and all(loaded for _, loaded, _ in images), (width, images)
            assert all(right <= inner + 1 for _, _, right in images), (width, images)
            document_width = driver.execute_script("return document.documentElement.scrollWidth")
            assert document_width <= inner, f"the page is {document_width} px wide in a {inner} px window"
            if page == "study":
                assert "verdict" in driver.page_source and "Warning:" in driver.page_source
            errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
            assert errors == [], (width, errors)
            requests = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
            urls = {m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"}
            assert urls and all(url.startswith(("file:", "data:")) for url in urls), (width, urls)
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(width, min(height, 8000))
            driver.save_screenshot(str(tmp_path / f"{page}-{width}.png"))
            assert (tmp_path / f"{page}-{width}.png").stat().st_size > 10_000
        # a phone (390 px at device pixel ratio 2, a mobile viewport): without the viewport
        # meta tag the page would lay out 980 px wide and be shown shrunk
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
        driver.get(report_files[page].as_uri())
        inner = driver.execute_script("return window.innerWidth")
        assert inner == 390, f"on a 390 px phone the page lays out {inner} px wide (the viewport meta tag?)"
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 390
        driver.save_screenshot(str(tmp_path / f"{page}-phone.png"))
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        # the print stylesheet: the page prints to a PDF of whole pages
        pdf = base64.b64decode(driver.execute_cdp_cmd("Page.printToPDF", {"printBackground": True})["data"])
        assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page") >= 2
        (tmp_path / f"{page}.pdf").write_bytes(pdf)
    finally:
        driver.quit()
