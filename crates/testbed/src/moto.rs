//! moto's AWS server on loopback, with Auto Scaling lifecycle hooks that behave like AWS.
//!
//! The drainer consumes lifecycle notifications (SQS, EventBridge), heartbeats and completes the
//! hook; moto 5.2.5 alone terminates at once and answers those calls with 500 NotImplemented.
//! `tests/moto/quiesce_moto.py` patches moto's Auto Scaling backend so instances wait in
//! `Terminating:Wait`, notifications are sent, and heartbeats, completion and DefaultResult on
//! timeout work; this module starts it for a test and tears it down with the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::Error;

/// moto imports a few hundred modules before it serves; on 2 cores that takes a few seconds, so
/// this only catches a server that will never come up.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// The introspection path of `quiesce_moto.py`: every lifecycle action it ever started.
const ACTIONS_PATH: &str = "/_quiesce/lifecycle-actions";

/// A running moto server; dropping it kills its process group and removes its log.
pub struct Moto {
    child: Child,
    url: String,
    addr: String,
    dir: tempfile::TempDir,
}

/// The launcher, found from this crate's source directory so tests work from any cwd.
fn launcher() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/moto/quiesce_moto.py")
}

impl Moto {
    /// Starts `python3 tests/moto/quiesce_moto.py --port 0` (the `python3` on PATH, which
    /// `scripts/test` points at the venv holding moto) and waits for its ready line.
    pub fn start() -> Result<Moto, Error> {
        let dir = tempfile::Builder::new().prefix("quiesce-moto-").tempdir()?;
        let log = std::fs::File::create(dir.path().join("moto.log"))?;
        let mut child = Command::new("python3")
            .arg(launcher())
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            // Its own process group, so Drop can take down anything it started with it.
            .process_group(0)
            .spawn()
            .map_err(|e| Error::Process {
                what: "starting python3 (is the venv from scripts/test --setup on PATH?)".into(),
                detail: e.to_string(),
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        // The reader keeps draining stdout after the ready line so the pipe never fills.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("moto ready: ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let mut moto = Moto {
            child,
            url: String::new(),
            addr: String::new(),
            dir,
        };
        match rx.recv_timeout(READY_DEADLINE) {
            Ok(url) => {
                moto.addr = url.trim_start_matches("http://").to_string();
                moto.url = url;
                Ok(moto)
            }
            // The reader ends when stdout closes, i.e. the process died before it was ready.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = moto.child.wait()?;
                Err(Error::Process {
                    what: format!(
                        "quiesce_moto.py exited with {status} (moto missing? run scripts/test --setup and put its venv on PATH)"
                    ),
                    detail: moto.log_tail(),
                })
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::NotReady {
                server: "moto",
                waited: READY_DEADLINE,
                log_tail: moto.log_tail(),
            }),
        }
    }

    /// The endpoint for every AWS SDK client (`endpoint_url`, or `AWS_ENDPOINT_URL`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every lifecycle action the server started, oldest first, as JSON objects
    /// `{instanceId, group, hook, token, transition, heartbeats, result, completedBy,
    /// completions}`: what a test asserts on ("CONTINUE recorded once") after the drainer ran,
    /// since AWS's own API forgets an action once it is complete.
    pub fn lifecycle_actions(&self) -> Result<Vec<serde_json::Value>, Error> {
        let body = self.get(ACTIONS_PATH)?;
        serde_json::from_slice(&body).map_err(|e| Error::Process {
            what: format!("parsing {ACTIONS_PATH}"),
            detail: format!("{e}: {}", String::from_utf8_lossy(&body)),
        })
    }

    /// The ELBv2 extension's log (`GET /_quiesce/elbv2/log`, tests/moto/elbv2_ext.py):
    /// deregistrations, ends of deregistration delays and lifecycle completions, each with its
    /// Unix time `at`, oldest first, so a test checks their order on the server's one clock.
    pub fn elbv2_log(&self) -> Result<Vec<serde_json::Value>, Error> {
        let body = self.get("/_quiesce/elbv2/log")?;
        serde_json::from_slice(&body).map_err(|e| Error::Process {
            what: "parsing /_quiesce/elbv2/log".into(),
            detail: format!("{e}: {}", String::from_utf8_lossy(&body)),
        })
    }

    /// `POST path` with a JSON body to one of the extensions' endpoints (`/_quiesce/elbv2`,
    /// `/_quiesce/elbv2/controller`, `/_quiesce/faults`); the answer's body.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> Result<Vec<u8>, Error> {
        self.request("POST", path, &body.to_string())
    }

    /// The id of moto's default VPC, for resources that need one (a target group): one EC2
    /// Query call, unsigned (moto routes by the credential scope and checks no signature).
    pub fn default_vpc(&self) -> Result<String, Error> {
        let body = self.request_with(
            "POST",
            "/",
            "Action=DescribeVpcs&Version=2016-11-15&Filter.1.Name=isDefault&Filter.1.Value.1=true",
            "Content-Type: application/x-www-form-urlencoded\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=testing/20261201/us-east-1/ec2/aws4_request, \
             SignedHeaders=host, Signature=0\r\n",
        )?;
        let text = String::from_utf8_lossy(&body);
        text.split("<vpcId>")
            .nth(1)
            .and_then(|rest| rest.split("</vpcId>").next())
            .map(str::to_string)
            .ok_or_else(|| Error::Process {
                what: "DescribeVpcs".into(),
                detail: format!("no default VPC in {text}"),
            })
    }

    fn get(&self, path: &str) -> Result<Vec<u8>, Error> {
        self.request("GET", path, "")
    }

    fn request(&self, method: &str, path: &str, body: &str) -> Result<Vec<u8>, Error> {
        self.request_with(method, path, body, "Content-Type: application/json\r\n")
    }

    /// A plain HTTP/1.1 request on loopback with `headers` (each ending in CRLF): no HTTP
    /// client crate for introspection calls.
    fn request_with(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &str,
    ) -> Result<Vec<u8>, Error> {
        let mut stream = TcpStream::connect(&self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{headers}\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| Error::Process {
                what: format!("{method} {path}"),
                detail: "no end of headers in the response".into(),
            })?;
        let head = String::from_utf8_lossy(&response[..split]);
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return Err(Error::Process {
                what: format!("{method} {path}"),
                detail: head.lines().next().unwrap_or_default().to_string(),
            });
        }
        Ok(response[split + 4..].to_vec())
    }

    /// The last lines the server logged (requests, lifecycle actions), for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // The group id is the child's pid (process_group(0)); `kill` reaches the whole group
        // without an unsafe libc call. The direct kill covers a missing `kill` binary.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
