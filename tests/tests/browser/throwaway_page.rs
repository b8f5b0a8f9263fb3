//! The harness against a page of its own (until the console exists): a
//! labelled form submitted with the keyboard, and a status that changes
//! after a while, as a polled job's does.

use axum::response::Html;
use axum::routing::get;
use axum::Router;
use fantoccini::key::Key;
use tokio::net::TcpListener;

use crate::harness::{Browser, StepResult};

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>harness</title></head>
<body>
<form id="f"><label for="name">Name</label><input id="name"><button id="go">Go</button></form>
<table><tr><td data-field="status">queued</td><td data-field="count"></td></tr></table>
<script>
document.getElementById('f').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = document.getElementById('name').value;
  setTimeout(() => {
    document.querySelector('[data-field=status]').textContent = 'completed ' + name;
    document.querySelector('[data-field=count]').textContent = new Intl.NumberFormat('en-US').format(2000);
  }, 300);
});
</script></body></html>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_drives_a_page_with_keys_and_waits_for_its_status() {
    let Some(mut browser) = Browser::start("harness").await else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, Router::new().route("/", get(|| async { Html(PAGE) })))
            .await
            .unwrap();
    });
    let result = drive(&mut browser, &url).await;
    server.abort();
    browser.finish(result).await;
}

async fn drive(browser: &mut Browser, url: &str) -> StepResult {
    browser.goto(url).await?;
    browser.wait_text_is("[data-field=status]", "queued").await?;
    browser.tab_to("name", 5).await?;
    browser.press(Key::Tab).await?;
    if browser.focused_id().await? != "go" {
        return Err("Tab from the input does not reach the button".into());
    }
    browser.click("#name").await?;
    browser.type_into("#name", "pointflow").await?;
    browser.press(Key::Enter).await?;
    browser
        .wait_text_is("[data-field=status]", "completed pointflow")
        .await?;
    browser.wait_text_is("[data-field=count]", "2,000").await?;
    browser.shot("completed").await
}
