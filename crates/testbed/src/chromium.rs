//! Headless Chromium (Debian's `chromium`, which `scripts/test` installs) for tests of HTML
//! the project writes: load a file with no network, let its scripts run, read the DOM back.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Dumps the DOM of `page` after its scripts ran, with a hard deadline on the browser.
pub fn dump_dom(page: &Path, profile: &Path) -> String {
    let which = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .expect("sh runs");
    assert!(
        which.status.success(),
        "chromium is not installed: run scripts/test (it installs Debian's chromium package), \
         or apt-get install -y --no-install-recommends chromium"
    );
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.display()),
            "--virtual-time-budget=5000",
            "--dump-dom",
            &format!("file://{}", page.display()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("waiting on chromium").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader
        .join()
        .expect("reader thread")
        .expect("chromium's output is text")
}

/// The opening tag of `<svg id="timeline" …>` in the dumped DOM.
pub fn svg_tag(dom: &str) -> &str {
    let start = dom
        .find("<svg id=\"timeline\"")
        .unwrap_or_else(|| panic!("no timeline svg in the DOM:\n{dom}"));
    let len = dom[start..].find('>').expect("tag ends");
    &dom[start..start + len]
}

/// The value of attribute `name` in an opening tag, as `dump_dom` prints it.
pub fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let at = tag.find(&key)? + key.len();
    let len = tag[at..].find('"')?;
    Some(&tag[at..at + len])
}
