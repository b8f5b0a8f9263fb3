//! The operator console in a real browser: headless Chromium driven through
//! chromedriver (WebDriver). `scripts/browser.sh` (and `scripts/test.sh`)
//! install Chromium and start the driver; without one the tests skip, unless
//! `POINTFLOW_REQUIRE_BROWSER=1`. Screenshots of each step go to
//! `target/browser-screenshots/`.

mod console_campaign;
mod harness;
