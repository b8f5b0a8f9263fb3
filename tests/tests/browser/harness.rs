//! One headless Chromium session through chromedriver (WebDriver): bounded
//! waits on what the page shows, keyboard input, and a screenshot per step.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use pointflow_tests::import::TempDir;
use serde_json::json;

/// The driver's URL; scripts/browser.sh exports it.
const WEBDRIVER_URL: &str = "POINTFLOW_WEBDRIVER_URL";
/// When `1`, a missing or unreachable driver fails the test instead of skipping it.
const REQUIRE_BROWSER: &str = "POINTFLOW_REQUIRE_BROWSER";

/// How long a wait for the page may take before the test fails. Generous
/// for a loaded 2-core machine; a passing run waits far less.
pub const WAIT: Duration = Duration::from_secs(30);
/// How often a wait looks at the page again.
const POLL: Duration = Duration::from_millis(100);

/// Chromium's flags: headless as root in a container, and nothing that
/// reaches for Google's services (a closed network makes those calls hang or
/// fail noisily).
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    "--lang=en-US",
];

/// A test step's failure, with what the page showed.
pub type StepResult<T = ()> = Result<T, String>;

/// A browser session and where its screenshots go.
pub struct Browser {
    pub client: Client,
    shots: PathBuf,
    step: usize,
    /// Chromium's profile: fresh per run, removed with the session.
    _profile: TempDir,
}

impl Browser {
    /// Opens a session on the driver named by `POINTFLOW_WEBDRIVER_URL`, or
    /// `None` (the test skips, saying why) when it is unset and
    /// `POINTFLOW_REQUIRE_BROWSER` is not `1`.
    pub async fn start(shots_dir: &str) -> Option<Browser> {
        let required = std::env::var(REQUIRE_BROWSER).is_ok_and(|v| v == "1");
        let Ok(url) = std::env::var(WEBDRIVER_URL) else {
            assert!(
                !required,
                "{REQUIRE_BROWSER}=1 but {WEBDRIVER_URL} is not set: start chromedriver with scripts/browser.sh"
            );
            eprintln!(
                "skipped: no browser ({WEBDRIVER_URL} unset); run through `bash scripts/browser.sh cargo test -p \
                 pointflow-tests --test browser`"
            );
            return None;
        };
        let profile = TempDir::new("pointflow-chromium");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.0.display()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "args": args },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal");
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("no browser session from chromedriver at {url}: {e}"));
        let shots = target_dir().join("browser-screenshots").join(shots_dir);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("create the screenshot folder");
        Some(Browser {
            client,
            shots,
            step: 0,
            _profile: profile,
        })
    }

    /// Ends the session (Chromium exits) and fails the test if a step
    /// failed, with a screenshot of the page as the failing step left it.
    pub async fn finish(mut self, result: StepResult) {
        if result.is_err() {
            if let Err(e) = self.shot("failure").await {
                eprintln!("{e}");
            }
        }
        if let Err(e) = self.client.clone().close().await {
            eprintln!("closing the browser session: {e}");
        }
        if let Err(step) = result {
            panic!("{step}");
        }
    }

    /// Saves a screenshot of the page as `NN-<name>.png` and prints its path.
    pub async fn shot(&mut self, name: &str) -> StepResult {
        self.step += 1;
        let png = self
            .client
            .screenshot()
            .await
            .map_err(|e| format!("screenshot {name}: {e}"))?;
        let path = self.shots.join(format!("{:02}-{name}.png", self.step));
        std::fs::write(&path, png).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("screenshot: {}", path.display());
        Ok(())
    }

    /// Makes the page run in the time zone `zone` (an IANA name), whatever
    /// the machine's: Chrome DevTools' `Emulation.setTimezoneOverride`
    /// through chromedriver.
    pub async fn set_time_zone(&self, zone: &str) -> StepResult {
        let command = DevTools {
            method: "Emulation.setTimezoneOverride",
            params: json!({ "timezoneId": zone }),
        };
        self.client
            .issue_cmd(command)
            .await
            .map(drop)
            .map_err(|e| format!("setting the time zone {zone}: {e}"))
    }

    /// Ends a step: saves its screenshot, then fails if the page shows its
    /// error banner (an API call failed on the way).
    pub async fn step_done(&mut self, name: &str) -> StepResult {
        self.shot(name).await?;
        let banner = self
            .client
            .find(Locator::Css("#error-banner"))
            .await
            .map_err(|e| format!("no #error-banner on the page: {e}"))?;
        let shown = banner.is_displayed().await.map_err(|e| format!("#error-banner: {e}"))?;
        if shown {
            let text = banner.text().await.unwrap_or_default();
            return Err(format!("after step {name:?} the page shows an error: {text}"));
        }
        Ok(())
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) -> StepResult {
        self.client.goto(url).await.map_err(|e| format!("opening {url}: {e}"))
    }

    /// The element `css` matches, waiting for it to appear.
    pub async fn find(&self, css: &str) -> StepResult<Element> {
        self.client
            .wait()
            .at_most(WAIT)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await
            .map_err(|e| format!("no element {css} within {WAIT:?}: {e}"))
    }

    /// Waits until the text of the element `css` matches `accept`, and
    /// returns it; the failure names the last text seen.
    pub async fn wait_text(&self, css: &str, what: &str, accept: impl Fn(&str) -> bool) -> StepResult<String> {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            // A re-rendered page replaces elements: look the element up each time.
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    let text = text.trim().to_owned();
                    if accept(&text) {
                        return Ok(text);
                    }
                    last = Some(text);
                }
            }
            if Instant::now() >= deadline {
                return Err(match last {
                    Some(text) => format!("{css}: expected {what} within {WAIT:?}, the page shows {text:?}"),
                    None => format!("{css}: expected {what} within {WAIT:?}, no such element"),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the element `css` shows exactly `expected`.
    pub async fn wait_text_is(&self, css: &str, expected: &str) -> StepResult<String> {
        self.wait_text(css, &format!("{expected:?}"), |text| text == expected)
            .await
    }

    /// Clicks the element `css` once it is there.
    pub async fn click(&self, css: &str) -> StepResult {
        let element = self.find(css).await?;
        element.click().await.map_err(|e| format!("clicking {css}: {e}"))
    }

    /// Types `text` into the element `css` (replacing what it held).
    pub async fn type_into(&self, css: &str, text: &str) -> StepResult {
        let element = self.find(css).await?;
        element.clear().await.map_err(|e| format!("clearing {css}: {e}"))?;
        element
            .send_keys(text)
            .await
            .map_err(|e| format!("typing into {css}: {e}"))
    }

    /// The `id` of the element that has the keyboard focus.
    pub async fn focused_id(&self) -> StepResult<String> {
        let element = self
            .client
            .active_element()
            .await
            .map_err(|e| format!("the focused element: {e}"))?;
        Ok(element
            .attr("id")
            .await
            .map_err(|e| format!("the focused element's id: {e}"))?
            .unwrap_or_default())
    }

    /// Presses Tab until the element with `id` has the focus, at most `limit` times: the page is usable without a
    /// mouse only if this succeeds.
    pub async fn tab_to(&self, id: &str, limit: usize) -> StepResult {
        let mut seen = Vec::new();
        for _ in 0..limit {
            let focused = self.focused_id().await?;
            if focused == id {
                return Ok(());
            }
            seen.push(focused);
            self.press(Key::Tab).await?;
        }
        if self.focused_id().await? == id {
            return Ok(());
        }
        Err(format!(
            "#{id} never took the focus in {limit} Tab presses; focus went through {seen:?}"
        ))
    }

    /// Presses `key` on the focused element.
    pub async fn press(&self, key: Key) -> StepResult {
        self.keys(&key).await
    }

    /// Types `text` (or WebDriver key codes) into the focused element.
    pub async fn keys(&self, text: &str) -> StepResult {
        let element = self
            .client
            .active_element()
            .await
            .map_err(|e| format!("the focused element: {e}"))?;
        element
            .send_keys(text)
            .await
            .map_err(|e| format!("typing {text:?} into the focused element: {e}"))
    }
}

/// A Chrome DevTools command through chromedriver's
/// `POST /session/{id}/goog/cdp/execute`.
#[derive(Debug)]
struct DevTools {
    method: &'static str,
    params: serde_json::Value,
}

impl WebDriverCompatibleCommand for DevTools {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/goog/cdp/execute", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.method, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// Cargo's target folder (where screenshots go): `CARGO_TARGET_DIR`, else
/// the workspace's `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            tests.parent().unwrap_or(&tests).join("target")
        },
        PathBuf::from,
    )
}
