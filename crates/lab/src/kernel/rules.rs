//! The kernel data plane's rules as text: the Services' addresses and chain names, one sync's
//! `iptables-restore` input as kube-proxy's `syncProxyRules` writes it, and the readings that
//! come back (`iptables-save -c` counters, `conntrack -L` entries).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use sha2::{Digest, Sha256};

/// The address a pod's server listens on inside the lab's namespace. The sandbox hands out pod
/// IPs in `10.244.0.0/16`; the lab keeps every address in `127.0.0.0/8`, so `10.244.y.z` plays
/// as `127.0.(y+1).z` (never `127.0.0.z`, where the sandbox's own API server listens). `None`
/// for an address outside that range.
pub fn pod_address(pod_ip: &str) -> Option<Ipv4Addr> {
    let ip: Ipv4Addr = pod_ip.parse().ok()?;
    let [a, b, y, z] = ip.octets();
    ((a, b) == (10, 244) && y < 255).then(|| Ipv4Addr::new(127, 0, y + 1, z))
}

/// The `n`-th Service virtual IP (`127.96.0.10`, `127.96.0.11`, …).
pub fn service_vip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 96, 0, 10u8.saturating_add(n))
}

/// One TCP port of one Service, as the proxier programs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port's name (`http`).
    pub port_name: String,
    /// The virtual IP clients connect to.
    pub vip: Ipv4Addr,
    /// The Service port.
    pub port: u16,
    /// The pods' port (the resolved targetPort).
    pub target_port: u16,
}

impl ServicePort {
    /// Port 80, named `http`, of the Service `default/{name}` at the `n`-th virtual IP
    /// ([`service_vip`]): how the lab's demo Services are declared.
    pub fn http(name: &str, n: u8, target_port: u16) -> ServicePort {
        ServicePort {
            namespace: "default".into(),
            name: name.into(),
            port_name: "http".into(),
            vip: service_vip(n),
            port: 80,
            target_port,
        }
    }

    /// Where clients connect.
    pub fn vip_addr(&self) -> SocketAddr {
        SocketAddr::from((self.vip, self.port))
    }

    /// kube-proxy's `ServicePortName.String()`: `namespace/name:port`.
    fn port_name_string(&self) -> String {
        format!("{}/{}:{}", self.namespace, self.name, self.port_name)
    }

    /// The `KUBE-SVC-` chain, named as upstream's `servicePortPolicyClusterChain`: the first 16
    /// base32 characters of sha256(port name + protocol), so the names match a real node's.
    pub fn svc_chain(&self) -> String {
        format!(
            "KUBE-SVC-{}",
            hash16(&format!("{}tcp", self.port_name_string()))
        )
    }

    /// The `KUBE-SEP-` chain of one endpoint, as upstream's `servicePortEndpointChainName`.
    pub fn sep_chain(&self, endpoint: SocketAddrV4) -> String {
        format!(
            "KUBE-SEP-{}",
            hash16(&format!("{}tcp{endpoint}", self.port_name_string()))
        )
    }
}

fn hash16(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let mut encoded = data_encoding::BASE32.encode(&digest);
    encoded.truncate(16);
    encoded
}

/// kube-proxy's probability for the i-th of n endpoints: 1/(n-i), ten decimals (upstream
/// `computeProbability`), so each of n endpoints gets 1/n of new connections.
fn probability(remaining: usize) -> String {
    format!("{:.10}", 1.0 / remaining as f64)
}

/// The endpoints of each Service in one sync: the DNAT destinations.
pub(super) type Desired = Vec<(ServicePort, Vec<SocketAddrV4>)>;

/// Input for `iptables-restore --noflush` that installs the jumps from the built-in `OUTPUT`
/// chains into `KUBE-SERVICES` (upstream `iptablesJumpChains`, the two entries for locally
/// originated traffic: the lab's clients are processes in the namespace, nothing is forwarded).
pub(super) fn render_jumps() -> String {
    "*filter\n:KUBE-SERVICES - [0:0]\n\
     -A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
     COMMIT\n\
     *nat\n:KUBE-SERVICES - [0:0]\n\
     -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
     COMMIT\n"
        .to_string()
}

/// One sync's `iptables-restore --noflush` input, as `syncProxyRules` writes it: the filter
/// table's `KUBE-SERVICES` with a REJECT per Service that has no endpoints ("has no
/// endpoints"); the nat table's `KUBE-SERVICES` with a jump per Service that has some, each
/// Service's `KUBE-SVC-` chain rewritten with the statistic rules (the last one unconditional,
/// as in `writeServiceToEndpointRules`), and a `KUBE-SEP-` chain for each endpoint not yet in
/// the kernel. A chain line (`:CHAIN - [0:0]`) flushes the chain it names, so every chain
/// written is replaced whole.
///
/// One difference from upstream, on purpose: an existing `KUBE-SEP-` chain is never rewritten
/// (its one DNAT rule depends only on the endpoint), so its packet counter counts every
/// connection it ever took; upstream rewrites the endpoint chains of a changed Service, which
/// resets their counters but sends no packet elsewhere. Upstream's hairpin rule (`-s podIP -j
/// KUBE-MARK-MASQ`) is left out: no pod is a client in the lab.
pub(super) fn render_sync(desired: &Desired, existing: &BTreeSet<String>) -> String {
    let mut filter = String::from("*filter\n:KUBE-SERVICES - [0:0]\n");
    let mut chains = String::from("*nat\n:KUBE-SERVICES - [0:0]\n");
    let mut rules = String::new();
    for (svc, endpoints) in desired {
        let name = svc.port_name_string();
        let dest = format!("-d {}/32 --dport {}", svc.vip, svc.port);
        if endpoints.is_empty() {
            let _ = writeln!(
                filter,
                "-A KUBE-SERVICES -m comment --comment \"{name} has no endpoints\" -m tcp -p tcp {dest} -j REJECT"
            );
            continue;
        }
        let svc_chain = svc.svc_chain();
        let _ = writeln!(chains, ":{svc_chain} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" -m tcp -p tcp {dest} -j {svc_chain}"
        );
        let n = endpoints.len();
        for (i, ep) in endpoints.iter().enumerate() {
            let sep = svc.sep_chain(*ep);
            let statistic = if i + 1 < n {
                format!(
                    " -m statistic --mode random --probability {}",
                    probability(n - i)
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                rules,
                "-A {svc_chain} -m comment --comment \"{name} -> {ep}\"{statistic} -j {sep}"
            );
            if !existing.contains(&sep) {
                let _ = writeln!(chains, ":{sep} - [0:0]");
                let _ = writeln!(
                    rules,
                    "-A {sep} -m comment --comment \"{name}\" -m tcp -p tcp -j DNAT --to-destination {ep}"
                );
            }
        }
    }
    filter.push_str("COMMIT\n");
    format!("{filter}{chains}{rules}COMMIT\n")
}

/// Input that flushes and deletes chains no rule jumps to any more (upstream writes a chain line
/// and `-X` for each stale chain in the same way).
pub(super) fn render_delete(stale: &BTreeSet<String>) -> String {
    let mut out = String::from("*nat\n");
    for chain in stale {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for chain in stale {
        let _ = writeln!(out, "-X {chain}");
    }
    out.push_str("COMMIT\n");
    out
}

/// Packet and byte counters of every `KUBE-SEP-` DNAT rule in `iptables-save -c -t nat`
/// output (`[packets:bytes] -A KUBE-SEP-… … -j DNAT …`). Only a connection's first packet
/// passes the nat table, so the packet count is the number of connections the rule took.
pub(super) fn parse_sep_counters(save: &str) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for line in save.lines() {
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let Some((counts, rule)) = rest.split_once("] ") else {
            continue;
        };
        let Some(chain) = rule
            .strip_prefix("-A ")
            .and_then(|r| r.split_whitespace().next())
        else {
            continue;
        };
        if !chain.starts_with("KUBE-SEP-") || !rule.contains("-j DNAT") {
            continue;
        }
        let Some((p, b)) = counts.split_once(':') else {
            continue;
        };
        if let (Ok(p), Ok(b)) = (p.parse(), b.parse()) {
            out.insert(chain.to_string(), (p, b));
        }
    }
    out
}

/// How many lines of `conntrack -L` output are ESTABLISHED TCP entries.
pub(super) fn count_established(listing: &str) -> u64 {
    listing
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == "ESTABLISHED"))
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> ServicePort {
        ServicePort::http("web", 0, 8080)
    }

    fn ep(host: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, host), 8080)
    }

    #[test]
    fn pod_ips_map_into_loopback_outside_127_0_0() {
        assert_eq!(pod_address("10.244.0.1"), Some(Ipv4Addr::new(127, 0, 1, 1)));
        assert_eq!(
            pod_address("10.244.3.250"),
            Some(Ipv4Addr::new(127, 0, 4, 250))
        );
        assert_eq!(pod_address("10.244.255.1"), None);
        assert_eq!(pod_address("10.0.0.1"), None);
        assert_eq!(pod_address("not an ip"), None);
        assert_eq!(service_vip(1), Ipv4Addr::new(127, 96, 0, 11));
    }

    #[test]
    fn chain_names_are_kube_proxys_shape_and_fit_iptables() {
        let svc = web();
        let svc_chain = svc.svc_chain();
        assert!(svc_chain.starts_with("KUBE-SVC-"), "{svc_chain}");
        assert_eq!(svc_chain.len(), 25, "{svc_chain}");
        assert!(svc_chain.len() <= 28, "iptables' limit");
        assert_eq!(svc_chain, web().svc_chain(), "stable across syncs");
        let (a, b) = (svc.sep_chain(ep(1)), svc.sep_chain(ep(2)));
        assert!(a.starts_with("KUBE-SEP-") && a.len() == 25, "{a}");
        assert_ne!(a, b, "one chain per endpoint");
        let api = ServicePort::http("api", 0, 8080);
        assert_ne!(api.svc_chain(), svc_chain);
        assert_ne!(api.sep_chain(ep(1)), a, "the Service is part of the name");
    }

    #[test]
    fn a_sync_splits_new_connections_evenly_and_rejects_a_service_without_endpoints() {
        let api = ServicePort::http("api", 1, 8080);
        let desired = vec![(web(), vec![ep(1), ep(2), ep(3)]), (api, vec![])];
        let text = render_sync(&desired, &BTreeSet::new());
        let svc = web().svc_chain();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("-A {svc} ")))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("--probability 0.3333333333"), "{text}");
        assert!(lines[1].contains("--probability 0.5000000000"), "{text}");
        assert!(
            !lines[2].contains("statistic"),
            "the last is certain: {text}"
        );
        assert!(lines[2].ends_with(&web().sep_chain(ep(3))), "{text}");
        assert!(
            text.contains("-A KUBE-SERVICES -m comment --comment \"default/web:http cluster IP\" -m tcp -p tcp -d 127.96.0.10/32 --dport 80 -j KUBE-SVC-"),
            "{text}"
        );
        assert!(
            text.contains("--comment \"default/api:http has no endpoints\" -m tcp -p tcp -d 127.96.0.11/32 --dport 80 -j REJECT"),
            "{text}"
        );
        assert!(
            text.contains("-j DNAT --to-destination 127.0.1.2:8080"),
            "{text}"
        );
        // The filter table comes first and each table is committed.
        assert!(text.starts_with("*filter\n"), "{text}");
        assert_eq!(text.matches("COMMIT\n").count(), 2, "{text}");
    }

    #[test]
    fn an_endpoint_chain_already_in_the_kernel_is_not_rewritten() {
        let existing: BTreeSet<String> = [web().sep_chain(ep(1))].into();
        let text = render_sync(&vec![(web(), vec![ep(1), ep(2)])], &existing);
        assert!(
            !text.contains(&format!(":{}", web().sep_chain(ep(1)))),
            "{text}"
        );
        assert!(!text.contains("127.0.1.1:8080\n"), "no new DNAT: {text}");
        assert!(
            text.contains(&format!(":{}", web().sep_chain(ep(2)))),
            "{text}"
        );
        assert!(
            text.contains(&format!("-j {}", web().sep_chain(ep(1)))),
            "still balanced to: {text}"
        );
    }

    #[test]
    fn stale_chains_are_flushed_then_deleted() {
        let stale: BTreeSet<String> = ["KUBE-SEP-A".to_string(), "KUBE-SVC-B".to_string()].into();
        assert_eq!(
            render_delete(&stale),
            "*nat\n:KUBE-SEP-A - [0:0]\n:KUBE-SVC-B - [0:0]\n-X KUBE-SEP-A\n-X KUBE-SVC-B\nCOMMIT\n"
        );
    }

    #[test]
    fn counters_are_read_from_the_dnat_rules_only() {
        let save = "# Generated by iptables-save\n*nat\n:KUBE-SEP-X - [0:0]\n\
            [7:420] -A KUBE-SVC-Y -m comment --comment \"a\" -j KUBE-SEP-X\n\
            [5:300] -A KUBE-SEP-X -p tcp -m comment --comment \"default/web:http\" -m tcp -j DNAT --to-destination 127.0.1.1:8080\n\
            [2:120] -A KUBE-SEP-Z -p tcp -m tcp -j DNAT --to-destination 127.0.1.2:8080\n\
            [0:0] -A KUBE-SEP-Q -s 127.0.1.3/32 -j KUBE-MARK-MASQ\nCOMMIT\n";
        let c = parse_sep_counters(save);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c["KUBE-SEP-X"], (5, 300));
        assert_eq!(c["KUBE-SEP-Z"], (2, 120));
    }

    #[test]
    fn only_established_entries_count_as_kept() {
        let listing = "tcp      6 431999 ESTABLISHED src=127.0.0.1 dst=127.96.0.10 sport=1 dport=80 src=127.0.1.1 dst=127.0.0.1 sport=8080 dport=1 [ASSURED] mark=0 use=1\n\
            tcp      6 119 TIME_WAIT src=127.0.0.1 dst=127.96.0.10 sport=2 dport=80 src=127.0.1.1 dst=127.0.0.1 sport=8080 dport=2 [ASSURED] mark=0 use=1\n";
        assert_eq!(count_established(listing), 1);
    }
}
