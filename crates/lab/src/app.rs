//! The app every lab pod runs (`quiesce __lab-app`): a small HTTP/1.1 server with keep-alive
//! and a fixed work time per request, that stops the way a well-written server does and no
//! better — on SIGTERM it stops accepting, lets the requests in flight finish, closes its idle
//! keep-alive connections and exits 0. It knows nothing of drains: under quiesce-init it simply
//! gets its SIGTERM later. `GET /ready` answers 200 at once (the readiness probe's path).
//!
//! The lab's runtime tells it where to listen in the environment, as a kubelet hands a pod its
//! IP through the downward API: [`LISTEN_ENV`]. It prints `listening on ADDR` on stdout once the
//! socket is bound.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Environment variable: the address to listen on (`127.0.1.5:8080`, or `127.0.0.1:0`).
pub const LISTEN_ENV: &str = "LAB_APP_LISTEN";
/// Environment variable: the pod's name, in every response body.
pub const POD_NAME_ENV: &str = "POD_NAME";
/// What the app prints on stdout once bound, before the address.
pub const LISTENING: &str = "listening on ";

/// A bad `quiesce __lab-app` invocation.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// An argument the app does not know.
    #[error("unexpected argument {0:?}: expected --work DUR")]
    Argument(String),
    /// `--work` without a humantime duration.
    #[error("--work {0:?}: expected a duration such as 2ms")]
    Work(String),
    /// No (or no parseable) listen address in the environment.
    #[error("{LISTEN_ENV}={0:?}: expected an address such as 127.0.0.1:8080")]
    Listen(String),
    /// Binding, signals or the runtime failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What the app is told.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AppArgs {
    work: Duration,
    listen: SocketAddr,
}

fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<AppArgs, AppError> {
    let mut work = Duration::ZERO;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--work" => {
                let v = it.next().cloned().unwrap_or_default();
                work = humantime::parse_duration(&v).map_err(|_| AppError::Work(v))?;
            }
            _ => return Err(AppError::Argument(a.clone())),
        }
    }
    let listen = env(LISTEN_ENV).unwrap_or_default();
    let listen = listen.parse().map_err(|_| AppError::Listen(listen))?;
    Ok(AppArgs { work, listen })
}

/// `quiesce __lab-app [--work DUR]`: runs the app until SIGTERM; exit 0 after a clean stop,
/// 2 on a usage error, 1 when it could not serve.
pub fn main(args: &[String]) -> ExitCode {
    let parsed = match parse(args, &|k| std::env::var(k).ok()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lab-app: {e}");
            return ExitCode::from(2);
        }
    };
    // Under quiesce-init the app is its child: it must not outlive it (the lab's own children
    // die with the lab the same way).
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        eprintln!("lab-app: PR_SET_PDEATHSIG: {e}");
    }
    let name = std::env::var(POD_NAME_ENV).unwrap_or_else(|_| "lab-app".into());
    let served = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AppError::from)
        .and_then(|rt| rt.block_on(serve(parsed, &name)));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab-app: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(args: AppArgs, name: &str) -> Result<(), AppError> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let listener = TcpListener::bind(args.listen).await?;
    println!("{LISTENING}{}", listener.local_addr()?);
    let body = Bytes::from(format!("served by {name}\n"));
    let (stopping, stop) = watch::channel(false);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(connection(stream, stop.clone(), body.clone(), args.work));
                }
            }
            _ = sigterm.recv() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Stop accepting: new connects are refused by the kernel from here on.
    drop(listener);
    stopping.send_replace(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// One keep-alive connection; at the stop it finishes the request in flight, or closes at once
/// when idle (hyper's graceful shutdown).
async fn connection(
    stream: tokio::net::TcpStream,
    mut stop: watch::Receiver<bool>,
    body: Bytes,
    work: Duration,
) {
    let service = service_fn(move |req: Request<Incoming>| {
        let body = body.clone();
        async move {
            let probe = req.uri().path() == "/ready";
            if !probe && !work.is_zero() {
                tokio::time::sleep(work).await;
            }
            let body = if probe {
                Bytes::from_static(b"ready\n")
            } else {
                body
            };
            Ok::<_, Infallible>(
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "text/plain")
                    .body(Full::new(body))
                    .expect("static response"),
            )
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(listen: Option<&str>) -> impl Fn(&str) -> Option<String> {
        let listen = listen.map(str::to_string);
        move |k| (k == LISTEN_ENV).then(|| listen.clone()).flatten()
    }

    #[test]
    fn arguments_and_environment() {
        let args = parse(&["--work".into(), "2ms".into()], &env(Some("127.0.0.1:0"))).unwrap();
        assert_eq!(args.work, Duration::from_millis(2));
        assert_eq!(args.listen, "127.0.0.1:0".parse().unwrap());
        assert!(matches!(
            parse(&["--work".into(), "soon".into()], &env(Some("127.0.0.1:0"))),
            Err(AppError::Work(_))
        ));
        assert!(matches!(
            parse(&["--fast".into()], &env(Some("127.0.0.1:0"))),
            Err(AppError::Argument(_))
        ));
        assert!(matches!(parse(&[], &env(None)), Err(AppError::Listen(_))));
    }
}
