//! The kernel data plane on its own, in a network namespace this test makes: rules for two
//! backends on 127.0.1.1 and 127.0.1.2 behind the virtual IP 127.96.0.10:80, as kube-proxy
//! writes them. The kernel splits new connections by `statistic`, counts them per KUBE-SEP
//! rule, keeps an open connection on its backend after the rules drop it (conntrack), and
//! refuses connections once the Service has no endpoints. Root only: without root (or without
//! iptables/conntrack) the test says why and passes, as the lab falls back to userspace.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quiesce_lab::kernel::{Proxier, ServicePort, enter_private_netns};
use quiesce_lab::timeline::{Timeline, kind};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(10);

/// A backend that answers each line with its name, on one connection for as long as the
/// client keeps it (keep-alive).
async fn backend(addr: &str, name: &'static str) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.expect("bind a backend");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(_)) = lines.next_line().await {
                    if write
                        .write_all(format!("{name}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    })
}

/// A client connection to the virtual IP.
struct Client(BufReader<TcpStream>);

impl Client {
    async fn connect(vip: SocketAddr) -> std::io::Result<Client> {
        let stream = tokio::time::timeout(DEADLINE, TcpStream::connect(vip))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        Ok(Client(BufReader::new(stream)))
    }

    /// Which backend answers on this connection.
    async fn ask(&mut self) -> String {
        self.0.get_mut().write_all(b"who\n").await.unwrap();
        let mut line = String::new();
        tokio::time::timeout(DEADLINE, self.0.read_line(&mut line))
            .await
            .expect("an answer in time")
            .unwrap();
        line.trim().to_string()
    }
}

/// Waits until the proxier's latest sync programmed `endpoints` (DNAT destinations).
async fn programmed(timeline: &Timeline, endpoints: &[&str]) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let events = timeline.events();
        let last = events.iter().rev().find(|e| e.kind == kind::RULES);
        let done = last.is_some_and(|e| {
            e.detail["endpoints"].as_array().is_some_and(|a| {
                a.iter()
                    .map(|v| v.as_str())
                    .eq(endpoints.iter().map(|s| Some(*s)))
            })
        });
        if done {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rules for {endpoints:?} not programmed: {:#?}",
            timeline.events()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn iptables_save() -> String {
    let out = std::process::Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .expect("iptables-save runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_kernel_balances_counts_and_keeps_established_connections() {
    let netns = match enter_private_netns() {
        Ok(netns) => netns,
        Err(why) => {
            eprintln!("skipped: the kernel data plane is not available here: {why}");
            return;
        }
    };
    // Built after the unshare: the runtime's threads are in this test's namespace.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let _one = backend("127.0.1.1:8080", "one").await;
        let _two = backend("127.0.1.2:8080", "two").await;
        let svc = ServicePort::http("web", 0, 8080);
        let vip = svc.vip_addr();
        let (endpoints, rx) = watch::channel(Arc::new(vec![
            "10.244.0.1".to_string(),
            "10.244.0.2".to_string(),
        ]));
        let timeline = Timeline::new();
        let proxier = Proxier::start(netns, vec![(svc.clone(), rx)], timeline.clone())
            .await
            .expect("the rules are installed");
        programmed(&timeline, &["127.0.1.1:8080", "127.0.1.2:8080"]).await;
        let save = iptables_save();
        assert!(
            save.contains(
                "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
            ),
            "{save}"
        );
        assert!(save.contains("--probability 0.5"), "{save}");

        // New connections: the kernel splits them between both backends.
        let mut landed: BTreeMap<String, u64> = BTreeMap::new();
        for _ in 0..40 {
            let mut c = Client::connect(vip).await.expect("connects to the VIP");
            *landed.entry(c.ask().await).or_default() += 1;
        }
        assert_eq!(
            landed.len(),
            2,
            "both backends took connections: {landed:?}"
        );

        // A keep-alive connection on backend one …
        let mut pinned = None;
        for _ in 0..60 {
            let mut c = Client::connect(vip).await.unwrap();
            let who = c.ask().await;
            *landed.entry(who.clone()).or_default() += 1;
            if who == "one" {
                pinned = Some(c);
                break;
            }
        }
        let mut pinned = pinned.expect("some connection lands on backend one");

        // … stays there after its endpoint leaves the rules, while new connections go to two.
        endpoints.send_replace(Arc::new(vec!["10.244.0.2".to_string()]));
        programmed(&timeline, &["127.0.1.2:8080"]).await;
        let one_chain = svc.sep_chain("127.0.1.1:8080".parse().unwrap());
        assert!(
            !iptables_save().contains(&one_chain),
            "the stale chain is deleted"
        );
        for _ in 0..5 {
            assert_eq!(pinned.ask().await, "one", "conntrack keeps the connection");
        }
        for _ in 0..20 {
            let mut c = Client::connect(vip).await.unwrap();
            let who = c.ask().await;
            assert_eq!(who, "two", "new connections follow the rules");
            *landed.entry(who).or_default() += 1;
        }

        // Back in the list: a new chain of the same name, its count added to the old one's.
        endpoints.send_replace(Arc::new(vec![
            "10.244.0.1".to_string(),
            "10.244.0.2".to_string(),
        ]));
        programmed(&timeline, &["127.0.1.1:8080", "127.0.1.2:8080"]).await;
        for _ in 0..20 {
            let mut c = Client::connect(vip).await.unwrap();
            *landed.entry(c.ask().await).or_default() += 1;
        }

        // No endpoints: kube-proxy's REJECT, a refused connection.
        endpoints.send_replace(Arc::new(vec![]));
        programmed(&timeline, &[]).await;
        let refused = Client::connect(vip).await.err().map(|e| e.kind());
        assert_eq!(refused, Some(std::io::ErrorKind::ConnectionRefused));

        drop(pinned);
        let report = proxier.finish().await;
        assert!(report.errors.is_empty(), "{report:#?}");
        let rule = |dest: &str| {
            report
                .endpoint_rules
                .iter()
                .find(|r| r.destination == dest)
                .unwrap_or_else(|| panic!("a rule for {dest}: {report:#?}"))
        };
        let (one, two) = (rule("127.0.1.1:8080"), rule("127.0.1.2:8080"));
        assert_eq!(one.packets, landed["one"], "{report:#?}\n{landed:?}");
        assert_eq!(two.packets, landed["two"], "{report:#?}\n{landed:?}");
        assert_eq!(report.sep_packets, landed.values().sum::<u64>());
        assert_eq!(one.chain, one_chain);
        assert_eq!(one.pod_ip, "10.244.0.1");
        // The pinned connection, kept at both of one's removals.
        assert_eq!(one.kept_by_conntrack, Some(2), "{report:#?}");
        assert_eq!(two.kept_by_conntrack, Some(0), "{report:#?}");
        assert_eq!(report.conntrack_kept, 2);
        assert_eq!(report.syncs, 4, "{report:#?}");
    });
}
