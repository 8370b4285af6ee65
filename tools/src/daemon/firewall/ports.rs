//! `--publish` specs and the host-side checks of a binding: is the host address local, is the
//! host port free of listening sockets.
//!
//! The grammar is Docker's `[HOST_IP:]HOST_PORT:PORT[/tcp|udp]`, with ranges (`8000-8010:80-90`).
//! Two of Docker's forms are refused with a clear message: a container port alone (`80`) and an
//! empty host port (`192.0.2.1::80`), which in Docker mean "a random host port": vswitch has no
//! userland proxy to ask the kernel for one and publishes only ports the user names. A host range
//! with a single container port (`8000-8010:80`) is accepted as in Docker: the first host port of
//! the range that is free is used. Loopback host addresses (`127.0.0.1:8080:80`) are refused too:
//! Docker serves them with its userland proxy; DNAT from loopback to a sandbox cannot route.
//!
//! The host checks run in the calling thread's network namespace (the daemon's): addresses are
//! read over netlink, listeners from `/proc/thread-self/net/{tcp,tcp6,udp,udp6}`.

use super::model::{Model, PortBinding, PortRange, Proto};
use super::FirewallError;
use crate::netlink::Netlink;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A parsed `--publish` spec, not yet tied to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishSpec {
    /// The host address (`None`: every local address).
    pub host_ip: Option<Ipv4Addr>,
    /// The host port(s).
    pub host_ports: PortRange,
    /// The sandbox's port(s).
    pub container_ports: PortRange,
    /// TCP (default) or UDP.
    pub proto: Proto,
}

fn invalid(spec: &str, why: impl std::fmt::Display) -> FirewallError {
    FirewallError::Invalid(format!("--publish {spec:?}: {why}"))
}

fn parse_port(spec: &str, text: &str) -> Result<u16, FirewallError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(spec, format_args!("{text:?} is not a port number")));
    }
    match text.parse::<u32>() {
        Ok(0) => Err(invalid(
            spec,
            "port 0 cannot be published (ports are 1-65535)",
        )),
        Ok(p) if p <= 65535 => Ok(p as u16),
        _ => Err(invalid(
            spec,
            format_args!("port {text} is out of range (1-65535)"),
        )),
    }
}

fn parse_range(spec: &str, text: &str) -> Result<PortRange, FirewallError> {
    let (a, b) = match text.split_once('-') {
        Some((a, b)) => (parse_port(spec, a)?, parse_port(spec, b)?),
        None => {
            let p = parse_port(spec, text)?;
            (p, p)
        }
    };
    PortRange::new(a, b).map_err(|e| invalid(spec, e))
}

/// Parses `[HOST_IP:]HOST_PORT:PORT[/tcp|udp]`.
pub fn parse_publish(spec: &str) -> Result<PublishSpec, FirewallError> {
    let (ports, proto) = match spec.rsplit_once('/') {
        Some((p, "tcp")) => (p, Proto::Tcp),
        Some((p, "udp")) => (p, Proto::Udp),
        Some((_, other)) => {
            return Err(invalid(
                spec,
                format_args!("unknown protocol {other:?} (tcp or udp)"),
            ))
        }
        None => (spec, Proto::Tcp),
    };
    if ports.starts_with('[') {
        return Err(invalid(spec, "IPv6 host addresses are not supported"));
    }
    let parts: Vec<&str> = ports.split(':').collect();
    let (host_ip, host, container) = match parts.as_slice() {
        [_] => {
            return Err(invalid(
                spec,
                "a host port is required (HOST_PORT:PORT): vswitch does not pick random host ports",
            ))
        }
        [h, c] => (None, *h, *c),
        [ip, h, c] => {
            let ip: Ipv4Addr = ip
                .parse()
                .map_err(|_| invalid(spec, format_args!("{ip:?} is not an IPv4 address")))?;
            if ip.is_loopback() {
                return Err(invalid(
                    spec,
                    "loopback host addresses cannot be published (DNAT to a sandbox needs a routable \
                     source; vswitch has no userland proxy): use a host address or leave it out",
                ));
            }
            (Some(ip).filter(|ip| !ip.is_unspecified()), *h, *c)
        }
        _ => return Err(invalid(spec, "expected [HOST_IP:]HOST_PORT:PORT[/tcp|udp]")),
    };
    if host.is_empty() {
        return Err(invalid(
            spec,
            "the host port is empty (HOST_IP::PORT): vswitch does not pick random host ports",
        ));
    }
    let host_ports = parse_range(spec, host)?;
    let container_ports = parse_range(spec, container)?;
    if container_ports.len() != 1 && host_ports.len() != container_ports.len() {
        return Err(invalid(
            spec,
            format_args!(
                "host range {host_ports} ({} ports) and container range {container_ports} ({} ports) differ in length",
                host_ports.len(),
                container_ports.len()
            ),
        ));
    }
    Ok(PublishSpec {
        host_ip,
        host_ports,
        container_ports,
        proto,
    })
}

impl PublishSpec {
    /// The binding of this spec for one endpoint, checked against the model and the host (see
    /// [`check_on_host`]). A host range with one container port takes the first free host port.
    pub fn bind(
        &self,
        model: &Model,
        network: &str,
        sandbox_ip: Ipv4Addr,
    ) -> Result<PortBinding, FirewallError> {
        let mut b = PortBinding {
            network: network.to_owned(),
            sandbox_ip,
            proto: self.proto,
            host_ip: self.host_ip,
            host_ports: self.host_ports,
            container_ports: self.container_ports,
        };
        if self.host_ports.len() == self.container_ports.len() {
            model.check_bindings(std::slice::from_ref(&b))?;
            check_on_host(&b, model)?;
            return Ok(b);
        }
        let mut last = None;
        for port in self.host_ports.ports() {
            b.host_ports = PortRange {
                start: port,
                end: port,
            };
            let ok = model
                .check_bindings(std::slice::from_ref(&b))
                .and_then(|()| check_on_host(&b, model));
            match ok {
                Ok(()) => return Ok(b),
                Err(e @ (FirewallError::Conflict(_) | FirewallError::Unavailable(_))) => {
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(FirewallError::Conflict(format!(
            "--publish {}:{}/{}: no host port of the range is free{}",
            self.host_ports,
            self.container_ports,
            self.proto,
            last.map(|e| format!(" (last: {e})")).unwrap_or_default()
        )))
    }
}

/// Checks what the model cannot know: the binding's host address is one of this namespace's,
/// and no listening socket holds its host ports.
pub fn check_on_host(b: &PortBinding, model: &Model) -> Result<(), FirewallError> {
    let host_ip = b.effective_host_ip(model.networks.get(&b.network));
    if let Some(ip) = host_ip {
        check_local_address(ip)?;
    }
    check_ports_free(b.proto, host_ip, b.host_ports)
}

/// Refuses an address that no interface of the calling thread's namespace holds.
pub fn check_local_address(ip: Ipv4Addr) -> Result<(), FirewallError> {
    let local = local_ipv4_addresses()?;
    if local.contains(&ip) {
        Ok(())
    } else {
        Err(FirewallError::Invalid(format!(
            "host address {ip} is not an address of this host (ports can be published only on local addresses)"
        )))
    }
}

/// Every IPv4 address of every interface in the calling thread's namespace, over netlink.
pub fn local_ipv4_addresses() -> Result<Vec<Ipv4Addr>, FirewallError> {
    let ctx =
        |e: std::io::Error| FirewallError::Apply(format!("reading the host's addresses: {e}"));
    let mut nl = Netlink::new().map_err(ctx)?;
    let mut out = Vec::new();
    for link in nl.list_links().map_err(ctx)? {
        // A link can vanish between the two requests; its addresses then do not count.
        if let Ok(addrs) = nl.list_addresses(&link.name) {
            out.extend(addrs.into_iter().map(|(a, _)| a));
        }
    }
    Ok(out)
}

/// A socket found listening (TCP) or bound (UDP) on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// Its local address (unspecified: every address).
    pub addr: IpAddr,
    /// Its local port.
    pub port: u16,
}

/// The TCP listeners or bound UDP sockets of the calling thread's namespace.
pub fn listeners(proto: Proto) -> Result<Vec<Listener>, FirewallError> {
    let (files, state) = match proto {
        Proto::Tcp => (["tcp", "tcp6"], "0A"),
        Proto::Udp => (["udp", "udp6"], "07"),
    };
    let mut out = Vec::new();
    for f in files {
        let path = format!("/proc/thread-self/net/{f}");
        match std::fs::read_to_string(&path) {
            Ok(text) => out.extend(parse_proc_net(&text, state)),
            // No IPv6 in this kernel: no tcp6/udp6 file, no IPv6 listener.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && f.ends_with('6') => {}
            Err(e) => return Err(FirewallError::Apply(format!("reading {path}: {e}"))),
        }
    }
    Ok(out)
}

/// Parses a `/proc/net/{tcp,udp}[6]` table, keeping the sockets in `state` (hex, e.g. `0A`).
/// Addresses are printed as native-endian 32-bit words of the network-order bytes.
pub fn parse_proc_net(text: &str, state: &str) -> Vec<Listener> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let mut cols = line.split_whitespace();
        let (Some(_), Some(local), Some(_), Some(st)) =
            (cols.next(), cols.next(), cols.next(), cols.next())
        else {
            continue;
        };
        if st != state {
            continue;
        }
        let Some((addr, port)) = local.split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port, 16) else {
            continue;
        };
        let mut bytes = Vec::with_capacity(16);
        for i in (0..addr.len()).step_by(8) {
            let Some(word) = addr
                .get(i..i + 8)
                .and_then(|w| u32::from_str_radix(w, 16).ok())
            else {
                break;
            };
            bytes.extend_from_slice(&word.to_ne_bytes());
        }
        let addr = match bytes.len() {
            4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&bytes);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => continue,
        };
        out.push(Listener { addr, port });
    }
    out
}

/// Refuses host ports that a listening socket holds on `host_ip` (or on any address).
pub fn check_ports_free(
    proto: Proto,
    host_ip: Option<Ipv4Addr>,
    host_ports: PortRange,
) -> Result<(), FirewallError> {
    for l in listeners(proto)? {
        if !host_ports.contains(l.port) {
            continue;
        }
        let v4 = match l.addr {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => a.to_ipv4_mapped(),
        };
        let clash = l.addr.is_unspecified() || host_ip.is_none() || (v4.is_some() && v4 == host_ip);
        if clash {
            return Err(FirewallError::Conflict(format!(
                "host port {}/{proto} is in use by a socket listening on {} on the host",
                l.port,
                std::net::SocketAddr::new(l.addr, l.port)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(spec: &str) -> PublishSpec {
        parse_publish(spec).unwrap_or_else(|e| panic!("{spec}: {e}"))
    }

    fn err(spec: &str) -> String {
        match parse_publish(spec) {
            Ok(p) => panic!("{spec} was accepted: {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn docker_forms_parse() {
        let p = ok("8080:80");
        assert_eq!(
            (
                p.host_ip,
                p.host_ports.start,
                p.container_ports.start,
                p.proto
            ),
            (None, 8080, 80, Proto::Tcp)
        );
        let p = ok("192.0.2.1:53:5353/udp");
        assert_eq!(p.host_ip, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(p.proto, Proto::Udp);
        assert_eq!(ok("0.0.0.0:1:2/tcp").host_ip, None);
        let p = ok("8000-8010:80-90");
        assert_eq!((p.host_ports.len(), p.container_ports.end), (11, 90));
        assert_eq!(ok("8000-8010:80").container_ports.len(), 1);
        assert_eq!(ok("65535:1").host_ports.start, 65535);
    }

    #[test]
    fn malformed_specs_are_refused_clearly() {
        assert!(err("0:80").contains("port 0"));
        assert!(err("8080:0").contains("port 0"));
        assert!(err("70000:80").contains("out of range"));
        assert!(err("80:99999999999999").contains("out of range"));
        assert!(err("80:80/sctp").contains("unknown protocol"));
        assert!(err("80:80/").contains("unknown protocol"));
        assert!(err("8000-8010:80-81").contains("differ in length"));
        assert!(err("80").contains("host port is required"));
        assert!(err("192.0.2.1::80").contains("random host ports"));
        assert!(err("1.2.3:80:80").contains("not an IPv4 address"));
        assert!(err("[::1]:80:80").contains("IPv6"));
        assert!(err("127.0.0.1:80:80").contains("loopback"));
        assert!(err("a:b:c:d").contains("expected"));
        assert!(err("x:80").contains("not a port number"));
        assert!(err("+80:80").contains("not a port number"));
        assert!(err("90-80:80").contains("ends before"));
        assert!(err(":80").contains("not a port number") || err(":80").contains("host port"));
        assert!(err("").contains("host port is required"));
    }

    #[test]
    fn proc_net_tables_are_read() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
   2: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n\
   3: garbage\n";
        let l = parse_proc_net(tcp, "0A");
        let lo = Ipv4Addr::from(u32::from_str_radix("0100007F", 16).unwrap().to_ne_bytes());
        #[cfg(target_endian = "little")]
        assert_eq!(lo, Ipv4Addr::LOCALHOST);
        assert_eq!(
            l,
            vec![
                Listener {
                    addr: IpAddr::V4(lo),
                    port: 8080
                },
                Listener {
                    addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    port: 80
                },
            ]
        );
        let tcp6 = "  sl  local_address                         remote_address                        st\n\
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0\n";
        assert_eq!(
            parse_proc_net(tcp6, "0A"),
            vec![Listener {
                addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                port: 8080
            }]
        );
    }
}
