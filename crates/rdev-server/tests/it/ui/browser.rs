//! Headless Chromium for the UI tests: a private `chromedriver` on a free port (killed on
//! drop), a fantoccini session over plain HTTP, and the checks every page must pass at
//! both widths (no horizontal scrolling, every form control labelled, headings in order),
//! with screenshots saved under `target/ui-screenshots/`.

use std::{path::PathBuf, process::Stdio, time::Duration};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// Desktop and phone widths every page is checked at.
pub const WIDTHS: [(u32, u32); 2] = [(1440, 1000), (390, 844)];

/// A browser session; `close().await` it at the end of a test.
pub struct Browser {
    pub client: Client,
    _driver: Child,
}

fn which(name: &str, fallback: &str) -> String {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
        .map_or_else(|| fallback.to_owned(), |p| p.display().to_string())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session at desktop width.
    pub async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver_bin = which("chromedriver", "/usr/bin/chromedriver");
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver not found ({driver_bin}: {e}); scripts/setup-tools installs it"
                )
            });
        let url = format!("http://127.0.0.1:{port}");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": which("chromium", "/usr/bin/chromium"),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--hide-scrollbars", "--window-size=1440,1000", "--lang=en-US"],
            }),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no WebDriver session: {e}"),
            }
        };
        let b = Browser {
            client,
            _driver: driver,
        };
        b.resize(WIDTHS[0].0, WIDTHS[0].1).await;
        b
    }

    /// Ends the session (the driver goes with the value).
    pub async fn close(self) {
        let _ = self.client.close().await;
    }

    /// Makes the viewport (not the window) `width` CSS pixels wide.
    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
        let inner = self.js("return window.innerWidth").await.as_u64().unwrap() as u32;
        if inner != width {
            let outer = width + width.saturating_sub(inner);
            self.client.set_window_size(outer, height).await.unwrap();
        }
    }

    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// Waits up to `secs` for `css` to match, and returns its text (read in the page, so
    /// a live swap between finding and reading cannot make it stale).
    pub async fn wait_text(&self, css: &str, secs: u64) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let script = format!(
            "const e = document.querySelector({}); return e ? e.innerText : null",
            json!(css)
        );
        loop {
            if let Value::String(text) = self.js(&script).await {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{css} never appeared; page: {}",
                self.js("return document.body.innerText").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to `secs` for `predicate` (JavaScript returning a boolean) to hold.
    pub async fn wait_js(&self, predicate: &str, secs: u64, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if self.js(&format!("return !!({predicate})")).await == json!(true) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: never held; page: {}",
                self.js("return document.body.innerText").await
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let el = self.client.find(Locator::Css(css)).await.unwrap();
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Checks the page at both widths and saves a screenshot at each as `<name>-<w>.png`;
    /// leaves the browser at desktop width.
    pub async fn check_and_shoot(&self, name: &str) {
        self.check_and_shoot_at(name, None).await;
    }

    /// [`Self::check_and_shoot`] with `focus` (a selector) scrolled into view first.
    pub async fn check_and_shoot_at(&self, name: &str, focus: Option<&str>) {
        for (w, h) in WIDTHS {
            self.resize(w, h).await;
            self.check_layout(name, w).await;
            if let Some(css) = focus {
                let script = format!(
                    "document.querySelector({})?.scrollIntoView({{block: 'center'}}); return null",
                    json!(css)
                );
                self.js(&script).await;
            }
            let png = self.client.screenshot().await.unwrap();
            let path = screenshot_dir().join(format!("{name}-{w}.png"));
            std::fs::write(&path, png).unwrap();
        }
        self.resize(WIDTHS[0].0, WIDTHS[0].1).await;
    }

    /// No horizontal scrolling, every control labelled, headings in order.
    async fn check_layout(&self, name: &str, width: u32) {
        let report = self
            .js(r#"
            const unlabelled = [...document.querySelectorAll('input, select, textarea')]
              .filter(e => e.type !== 'hidden' && e.labels.length === 0 && !e.getAttribute('aria-label'))
              .map(e => e.name || e.id || e.outerHTML.slice(0, 60));
            const levels = [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')]
              .filter(h => h.getClientRects().length > 0 || h.closest('details'))
              .map(h => Number(h.tagName[1]));
            const wide = [...document.querySelectorAll('body *')]
              .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
              .map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className).slice(0, 5);
            return {scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth,
                    unlabelled, levels, wide};
            "#)
            .await;
        let scroll = report["scroll"].as_u64().unwrap();
        let inner = report["inner"].as_u64().unwrap();
        assert!(
            scroll <= inner,
            "{name} at {width}px scrolls sideways ({scroll} > {inner}): {}",
            report["wide"]
        );
        assert_eq!(
            report["unlabelled"],
            json!([]),
            "{name}: controls without a label"
        );
        let levels: Vec<u64> = report["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_u64().unwrap())
            .collect();
        assert_eq!(
            levels.first(),
            Some(&1),
            "{name}: starts with one h1: {levels:?}"
        );
        assert_eq!(
            levels.iter().filter(|l| **l == 1).count(),
            1,
            "{name}: one h1: {levels:?}"
        );
        for pair in levels.windows(2) {
            assert!(
                pair[1] <= pair[0] + 1,
                "{name}: heading level skipped: {levels:?}"
            );
        }
    }
}

/// `target/ui-screenshots/` of this workspace (or of `CARGO_TARGET_DIR`).
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
