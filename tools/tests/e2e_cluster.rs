//! The cluster client against a real etcd (root, namespaces): networks seen by other hosts'
//! watchers, VNI claims, concurrent cluster-wide IPAM, lease expiry of a dead node, an etcd
//! restart, and network removal leaving no key.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::etcd::{etcd_or_skip, EtcdLab};
use crossbeam_channel::Receiver;
use tools::daemon::cluster::{
    Cluster, ClusterConfig, ClusterError, ClusterEvent, NetworkSpec, Watcher, DEFAULT_PREFIX,
};

/// How long an event may take to reach a watcher.
const EVENT_WAIT: Duration = Duration::from_secs(10);

fn vtep(i: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(192, 0, 2, i), 4789))
}

fn connect(lab: &EtcdLab, node: &str, i: u8) -> Cluster {
    Cluster::connect(&lab.endpoints(), DEFAULT_PREFIX, node, vtep(i))
        .unwrap_or_else(|e| panic!("connect {node}: {e}\netcd log:\n{}", lab.log()))
}

fn spec(name: &str, subnet: &str, vni: Option<u32>) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        vni,
        subnet: subnet.parse().unwrap(),
        gateway: None,
        ip_range: None,
        reserved: vec![],
        options: Default::default(),
    }
}

fn mac(i: u8) -> switch::MacAddr {
    switch::MacAddr([0x02, 0, 0, 0, 0, i])
}

/// Reads events until `want` matches one (returning it), or panics after `timeout`.
fn wait_event(
    events: &Receiver<ClusterEvent>,
    what: &str,
    timeout: Duration,
    mut want: impl FnMut(&ClusterEvent) -> bool,
) -> ClusterEvent {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(event) if want(&event) => return event,
            Ok(event) => seen.push(event),
            Err(_) => panic!("no {what} within {timeout:?}; saw {seen:?}"),
        }
    }
}

/// A watcher that has finished its first full read.
fn synced_watcher(cluster: &Cluster) -> Watcher {
    let watcher = cluster.watch().expect("watch");
    wait_event(&watcher.events, "first Synced", EVENT_WAIT, |e| {
        matches!(e, ClusterEvent::Synced { .. })
    });
    watcher
}

/// `publish_endpoints`: 250 endpoints in three transactions (three revisions) reach another
/// host's watcher, all of them, under the node's lease; on a network etcd lacks it is refused
/// and nothing is written.
#[test]
fn endpoints_published_in_batches_reach_a_watcher() {
    if !etcd_or_skip() {
        return;
    }
    let lab = EtcdLab::start();
    lab.run(|| {
        let a = connect(&lab, "a", 1);
        let b = connect(&lab, "b", 2);
        a.create_network(spec("wide", "10.78.0.0/16", None))
            .unwrap();
        let watcher = synced_watcher(&b);
        let mut many = Vec::new();
        for i in 0..250u32 {
            let m = i.to_be_bytes();
            let ip = std::net::Ipv4Addr::new(10, 78, m[2], m[3]);
            many.push((
                format!("e{i}"),
                switch::MacAddr([2, 0, 0, m[1], m[2], m[3]]),
                ip,
            ));
        }
        let before = a.snapshot().unwrap().revision;
        a.publish_endpoints("wide", &many).unwrap();
        let after = a.snapshot().unwrap().revision;
        assert_eq!(after - before, 3, "three transactions of at most 100");
        let mut seen = BTreeSet::new();
        while seen.len() < many.len() {
            match wait_event(&watcher.events, "EndpointAdded", EVENT_WAIT, |e| {
                matches!(e, ClusterEvent::EndpointAdded { .. })
            }) {
                ClusterEvent::EndpointAdded { id, node, .. } => {
                    assert_eq!(node, "a");
                    seen.insert(id);
                }
                other => panic!("{other:?}"),
            }
        }
        let view = b.snapshot().unwrap();
        assert_eq!(view.endpoints["wide"].len(), 250);
        assert!(view.endpoints["wide"].values().all(|r| r.node == "a"));
        assert!(matches!(
            a.publish_endpoints("nowhere", &many[..1]),
            Err(ClusterError::NoSuchNetwork { .. })
        ));
        assert!(!a.snapshot().unwrap().endpoints.contains_key("nowhere"));
        // A clean leave takes them all with the lease.
        drop(a);
        wait_event(
            &watcher.events,
            "NodeDown a",
            EVENT_WAIT,
            |e| matches!(e, ClusterEvent::NodeDown { name, .. } if name == "a"),
        );
        assert!(b.snapshot().unwrap().endpoints.is_empty());
    });
}

#[test]
fn a_network_created_by_one_host_reaches_another_hosts_watcher() {
    if !etcd_or_skip() {
        return;
    }
    let lab = EtcdLab::start();
    lab.run(|| {
        let a = connect(&lab, "a", 1);
        let b = connect(&lab, "b", 2);
        let watcher = synced_watcher(&b);
        let stored = a.create_network(spec("blue", "10.77.0.0/24", None)).unwrap();
        assert_eq!(stored.vni, Some(4096), "the first automatic VNI");
        assert_eq!(stored.gateway, Some(Ipv4Addr::new(10, 77, 0, 1)));
        let event = wait_event(&watcher.events, "NetworkAdded blue", EVENT_WAIT, |e| {
            matches!(e, ClusterEvent::NetworkAdded(s) if s.name == "blue")
        });
        assert_eq!(event, ClusterEvent::NetworkAdded(stored));

        let ip = a.allocate_address("blue", "ep1", None).unwrap();
        a.publish_endpoint("blue", "ep1", mac(1), ip).unwrap();
        let event = wait_event(&watcher.events, "EndpointAdded ep1", EVENT_WAIT, |e| {
            matches!(e, ClusterEvent::EndpointAdded { .. })
        });
        assert_eq!(
            event,
            ClusterEvent::EndpointAdded {
                network: "blue".into(),
                id: "ep1".into(),
                mac: mac(1),
                ip,
                node: "a".into()
            }
        );
        let view = b.snapshot().unwrap();
        assert_eq!(view.flood_list("blue", "b"), vec![vtep(1)]);
        assert!(view.flood_list("blue", "a").is_empty());

        let status = b.status().unwrap();
        assert_eq!(status.node, "b");
        let names: Vec<&str> = status.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(status.nodes.iter().all(|n| n.lease_ttl_secs > 0 && n.lease_granted_secs == 5));
        assert_eq!((status.networks, status.endpoint_count), (1, 1));
        let text = status.to_string();
        assert!(text.contains("192.0.2.1:4789") && text.contains("b *"), "{text}");

        // A clean leave revokes the lease: node and endpoint go at once.
        drop(a);
        wait_event(&watcher.events, "EndpointRemoved ep1", EVENT_WAIT, |e| {
            matches!(e, ClusterEvent::EndpointRemoved { id, .. } if id == "ep1")
        });
        wait_event(&watcher.events, "NodeDown a", EVENT_WAIT, |e| {
            matches!(e, ClusterEvent::NodeDown { name, vtep: v } if name == "a" && *v == vtep(1))
        });
    });
}

#[test]
fn a_vni_cannot_be_claimed_twice() {
    if !etcd_or_skip() {
        return;
    }
    let lab = EtcdLab::start();
    lab.run(|| {
        let a = connect(&lab, "a", 1);
        let b = connect(&lab, "b", 2);
        a.create_network(spec("red", "10.1.0.0/24", Some(4097)))
            .unwrap();
        match b.create_network(spec("green", "10.2.0.0/24", Some(4097))) {
            Err(ClusterError::VniInUse { vni: 4097, owner }) => assert_eq!(owner, "red"),
            other => panic!("second claim of VNI 4097: {other:?}"),
        }
        match b.create_network(spec("red", "10.3.0.0/24", None)) {
            Err(ClusterError::NetworkExists { name }) => assert_eq!(name, "red"),
            other => panic!("second network red: {other:?}"),
        }
        assert!(matches!(
            b.create_network(spec("big", "10.4.0.0/24", Some(1 << 24))),
            Err(ClusterError::BadVni { .. })
        ));
        // Automatic choices skip the claimed VNI.
        let first = b.create_network(spec("c1", "10.5.0.0/24", None)).unwrap();
        let second = a.create_network(spec("c2", "10.6.0.0/24", None)).unwrap();
        assert_eq!((first.vni, second.vni), (Some(4096), Some(4098)));
        let view = a.snapshot().unwrap();
        let claims: Vec<(u32, &str)> = view.vnis.iter().map(|(v, n)| (*v, n.as_str())).collect();
        assert_eq!(claims, [(4096, "c1"), (4097, "red"), (4098, "c2")]);
        assert!(!view.networks.contains_key("green"));
    });
}

#[test]
fn concurrent_allocations_from_two_hosts_are_distinct() {
    if !etcd_or_skip() {
        return;
    }
    let lab = EtcdLab::start();
    lab.run(|| {
        let a = connect(&lab, "a", 1);
        let b = connect(&lab, "b", 2);
        a.create_network(spec("blue", "10.20.0.0/24", None))
            .unwrap();
        let addresses: Vec<Ipv4Addr> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..30)
                .map(|i| {
                    let host = if i % 2 == 0 { &a } else { &b };
                    scope.spawn(move || host.allocate_address("blue", &format!("ep{i}"), None))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("allocator thread").expect("allocation"))
                .collect()
        });
        let distinct: BTreeSet<Ipv4Addr> = addresses.iter().copied().collect();
        assert_eq!(distinct.len(), 30, "{addresses:?}");
        let gateway = Ipv4Addr::new(10, 20, 0, 1);
        assert!(!distinct.contains(&gateway));
        let stored = &a.snapshot().unwrap().addresses["blue"];
        let stored: BTreeSet<Ipv4Addr> = stored.keys().copied().collect();
        assert_eq!(stored, distinct);
        // The round-robin search hands out a contiguous run from the first host address.
        let expected: BTreeSet<Ipv4Addr> = (2..32).map(|h| Ipv4Addr::new(10, 20, 0, h)).collect();
        assert_eq!(distinct, expected);
    });
}

#[test]
fn released_addresses_are_not_quickly_reused() {
    if !etcd_or_skip() {
        return;
    }
    let lab = EtcdLab::start();
    lab.run(|| {
        let a = connect(&lab, "a", 1);
        let b = connect(&lab, "b", 2);
        // A /29: gateway .1, hosts .2 to .6.
        a.create_network(spec("small", "10.30.0.0/29", None))
            .unwrap();
        let first = a.allocate_address("small", "x", None).unwrap();
        assert_eq!(first, Ipv4Addr::new(10, 30, 0, 2));
        a.release_address("small", first).unwrap();
        assert!(matches!(
            a.release_address("small", first),
            Err(ClusterError::NotAllocated { .. })
        ));
        // Neither this host nor another gets .2 back until the search has gone round.
        let mut next = Vec::new();
        for (i, host) in [&b, &a, &b, &a].into_iter().enumerate() {
            next.push(
                host.allocate_address("small", &format!("y{i}"), None)
                    .unwrap(),
            );
        }
        let hosts: Vec<u8> = next.iter().map(|ip| ip.octets()[3]).collect();
        assert_eq!(hosts, [3, 4, 5, 6]);
        assert_eq!(
            b.allocate_address("small", "z", None).unwrap(),
            first,
            "after wrapping round"
        );
        assert!(matches!(
            a.allocate_address("small", "full", None),
            Err(ClusterError::Ipam { .. })
        ));
        // An explicit request for a held address is refused with its owner.
        match b.allocate_address("small", "w", Some(Ipv4Addr::new(10, 30, 0, 4))) {
            Err(ClusterError::Ipam { source, .. }) => assert!(source.to_string().contains("y1")),
            other => panic!("request of a held address: {other:?}"),
        }
    });
}

#[test]
fn a_node_whose_keepalive_stops_disappears_within_the_ttl() {
    if !etcd_or_skip() {
        return;
    }
    let lab = EtcdLab::start();
    lab.run(|| {
        let ttl = Duration::from_secs(2);
        let mut config = ClusterConfig::new(&lab.endpoints(), "doomed", vtep(9));
        config.ttl = ttl;
        let doomed = Cluster::connect_with(config).unwrap();
        let b = connect(&lab, "b", 2);
        doomed
            .create_network(spec("blue", "10.40.0.0/24", None))
            .unwrap();
        let ip = doomed.allocate_address("blue", "e9", None).unwrap();
        doomed.publish_endpoint("blue", "e9", mac(9), ip).unwrap();
        let watcher = synced_watcher(&b);
        // Outlive several renewals first: the keep-alive does keep it.
        let alive_until = Instant::now() + ttl * 2;
        while Instant::now() < alive_until {
            if let Ok(event) = watcher.events.recv_timeout(Duration::from_millis(100)) {
                assert!(!matches!(event, ClusterEvent::NodeDown { .. }), "{event:?}");
            }
        }
        doomed.halt_keepalive();
        let halted = Instant::now();
        wait_event(&watcher.events, "EndpointRemoved e9", ttl * 3, |e| {
            matches!(e, ClusterEvent::EndpointRemoved { id, node, .. } if id == "e9" && node == "doomed")
        });
        wait_event(&watcher.events, "NodeDown doomed", ttl * 3, |e| {
            matches!(e, ClusterEvent::NodeDown { name, .. } if name == "doomed")
        });
        let took = halted.elapsed();
        // etcd checks expiry every 500 ms and revokes through raft; a lease may be up to one
        // renewal old when halted. The slack covers a loaded machine (4.1 s seen at load 16).
        assert!(took <= ttl + Duration::from_millis(2500), "took {took:?}");
        let view = b.snapshot().unwrap();
        assert!(!view.nodes.contains_key("doomed"));
        assert!(view.endpoints.is_empty());
        // The network and its allocation are not the node's: they stay.
        assert!(view.networks.contains_key("blue"));
        assert_eq!(view.addresses["blue"].len(), 1);
    });
}

#[test]
fn etcd_killed_and_restarted_the_client_resyncs_and_nothing_is_lost() {
    if !etcd_or_skip() {
        return;
    }
    let mut lab = EtcdLab::start();
    let endpoints = lab.endpoints();
    let ns = lab_ns_file(&lab);
    // Everything runs inside the lab's namespace, the clients' threads too; etcd is killed and
    // restarted from there (the lab's own waits enter the namespace again).
    in_ns(&ns, || {
        let mut config = ClusterConfig::new(&endpoints, "a", vtep(1));
        config.timeout = Duration::from_millis(1000);
        let a = Cluster::connect_with(config).unwrap();
        let b = Cluster::connect(&endpoints, DEFAULT_PREFIX, "b", vtep(2)).unwrap();
        a.create_network(spec("blue", "10.50.0.0/24", None))
            .unwrap();
        for i in 0..3 {
            let ip = a.allocate_address("blue", &format!("e{i}"), None).unwrap();
            a.publish_endpoint("blue", &format!("e{i}"), mac(i), ip)
                .unwrap();
        }
        let watcher = synced_watcher(&b);
        let before = a.snapshot().unwrap();

        lab.kill();
        wait_event(&watcher.events, "Unreachable", EVENT_WAIT, |e| {
            matches!(e, ClusterEvent::Unreachable { .. })
        });
        let started = Instant::now();
        match a.create_network(spec("red", "10.51.0.0/24", None)) {
            Err(ClusterError::Unreachable { .. }) => {}
            other => panic!("create with etcd down: {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );

        lab.restart();
        // A resync ends with Synced; no change was lost, so it says nothing else.
        let mut between = Vec::new();
        wait_event(
            &watcher.events,
            "Synced after restart",
            EVENT_WAIT * 3,
            |e| {
                if matches!(e, ClusterEvent::Synced { .. }) {
                    return true;
                }
                between.push(e.clone());
                false
            },
        );
        assert!(
            between
                .iter()
                .all(|e| matches!(e, ClusterEvent::Unreachable { .. })),
            "{between:?}"
        );
        let after = a.snapshot().unwrap();
        assert_eq!(after.networks, before.networks);
        assert_eq!(after.vnis, before.vnis);
        assert_eq!(after.addresses, before.addresses);
        assert_eq!(after.endpoints, before.endpoints);
        assert_eq!(
            after.nodes.keys().collect::<Vec<_>>(),
            before.nodes.keys().collect::<Vec<_>>()
        );
        // The watch is live again, and the keep-alive too: both nodes outlive their TTL.
        a.create_network(spec("red", "10.51.0.0/24", None)).unwrap();
        wait_event(
            &watcher.events,
            "NetworkAdded red",
            EVENT_WAIT,
            |e| matches!(e, ClusterEvent::NetworkAdded(s) if s.name == "red"),
        );
        let status = b.status().unwrap();
        assert!(
            status.nodes.iter().all(|n| n.lease_ttl_secs > 0),
            "{status:?}"
        );
    });
}

#[test]
fn a_restarted_node_reconciles_its_endpoints() {
    if !etcd_or_skip() {
        return;
    }
    let lab = EtcdLab::start();
    lab.run(|| {
        let ttl = Duration::from_secs(2);
        let mut config = ClusterConfig::new(&lab.endpoints(), "a", vtep(1));
        config.ttl = ttl;
        let old = Cluster::connect_with(config.clone()).unwrap();
        old.create_network(spec("blue", "10.70.0.0/24", None))
            .unwrap();
        for i in 1..=2 {
            let ip = old
                .allocate_address("blue", &format!("e{i}"), None)
                .unwrap();
            old.publish_endpoint("blue", &format!("e{i}"), mac(i), ip)
                .unwrap();
        }
        // kill -9: the keep-alive stops, the lease is not revoked.
        old.halt_keepalive();
        let old_lease = old.lease();
        let new = Cluster::connect_with(config).unwrap();
        assert_ne!(new.lease(), old_lease);
        // The host still has e1 locally, not e2.
        let withdrawn = new
            .reconcile_endpoints(|net, id| net == "blue" && id == "e1")
            .unwrap();
        assert_eq!(withdrawn, [("blue".to_string(), "e2".to_string())]);
        // Once the old lease has expired, e1 and the node are still there, under the new lease.
        common::wait_for("the old lease to expire", ttl * 4, || {
            let (left, _) = new.etcd().lease_time_to_live(old_lease).unwrap();
            (left < 0).then_some(())
        });
        let all = new.etcd().range_prefix(new.keys().prefix()).unwrap();
        let under_new: Vec<&str> = all
            .kvs
            .iter()
            .filter(|kv| kv.lease == new.lease())
            .map(|kv| kv.key.as_str())
            .collect();
        assert_eq!(
            under_new,
            [new.keys().endpoint("blue", "e1"), new.keys().node("a")]
        );
        assert!(all.kvs.iter().all(|kv| kv.lease != old_lease));
        drop(old);
    });
}

#[test]
fn remove_network_is_refused_while_endpoints_exist_and_leaves_no_key() {
    if !etcd_or_skip() {
        return;
    }
    let lab = EtcdLab::start();
    lab.run(|| {
        let a = connect(&lab, "a", 1);
        let b = connect(&lab, "b", 2);
        let stored = a
            .create_network(spec("blue", "10.60.0.0/24", None))
            .unwrap();
        a.create_network(spec("other", "10.61.0.0/24", None))
            .unwrap();
        let ip = b.allocate_address("blue", "e1", None).unwrap();
        b.allocate_address("blue", "e2", None).unwrap();
        b.publish_endpoint("blue", "e1", mac(1), ip).unwrap();
        match a.remove_network("blue") {
            Err(ClusterError::NetworkInUse { count, nodes, .. }) => {
                assert_eq!((count, nodes.as_str()), (1, "b"));
            }
            other => panic!("remove with an endpoint: {other:?}"),
        }
        assert!(a.snapshot().unwrap().networks.contains_key("blue"));
        b.withdraw_endpoint("blue", "e1").unwrap();
        a.remove_network("blue").unwrap();
        assert!(matches!(
            a.remove_network("blue"),
            Err(ClusterError::NoSuchNetwork { .. })
        ));
        assert!(matches!(
            b.publish_endpoint("blue", "e1", mac(1), ip),
            Err(ClusterError::NoSuchNetwork { .. })
        ));
        let all = a.etcd().range_prefix(a.keys().prefix()).unwrap();
        let keys: Vec<&str> = all.kvs.iter().map(|kv| kv.key.as_str()).collect();
        let vni_key = a.keys().vni(stored.vni.unwrap());
        assert!(
            keys.iter().all(|k| !k.contains("/blue") && *k != vni_key),
            "{keys:?}"
        );
        // The other network and both nodes are untouched.
        assert!(keys.contains(&a.keys().network("other").as_str()));
        assert!(keys.contains(&a.keys().node("b").as_str()));
    });
}

#[test]
fn a_node_whose_lease_etcd_forgot_registers_again_with_its_endpoints() {
    if !etcd_or_skip() {
        return;
    }
    let lab = EtcdLab::start();
    lab.run(|| {
        let ttl = Duration::from_secs(3);
        let mut config = ClusterConfig::new(&lab.endpoints(), "a", vtep(1));
        config.ttl = ttl;
        let a = Cluster::connect_with(config).unwrap();
        let b = connect(&lab, "b", 2);
        a.create_network(spec("blue", "10.80.0.0/24", None))
            .unwrap();
        // More endpoints than etcd takes in one transaction (128 operations by default).
        const COUNT: usize = 150;
        for i in 0..COUNT {
            let ip = Ipv4Addr::new(10, 80, 0, 2 + i as u8);
            a.publish_endpoint("blue", &format!("e{i}"), mac(i as u8), ip)
                .unwrap();
        }
        let watcher = synced_watcher(&b);
        let old_lease = a.lease();
        // An operator (or etcd losing state) revokes a's lease: its keys go at once...
        b.etcd().lease_revoke(old_lease).unwrap();
        wait_event(
            &watcher.events,
            "NodeDown a",
            EVENT_WAIT,
            |e| matches!(e, ClusterEvent::NodeDown { name, .. } if name == "a"),
        );
        // ...and a's keep-alive notices within a renewal and writes them again, node first.
        let back = Instant::now();
        wait_event(
            &watcher.events,
            "NodeUp a",
            ttl * 2,
            |e| matches!(e, ClusterEvent::NodeUp { name, .. } if name == "a"),
        );
        let mut again = BTreeSet::new();
        wait_event(&watcher.events, "every endpoint again", ttl * 2, |e| {
            if let ClusterEvent::EndpointAdded { id, .. } = e {
                again.insert(id.clone());
            }
            again.len() == COUNT
        });
        assert!(back.elapsed() <= ttl, "{:?}", back.elapsed());
        assert_ne!(a.lease(), old_lease);
        assert_eq!(b.snapshot().unwrap().nodes["a"].lease, a.lease());
    });
}

#[test]
fn a_live_node_name_with_another_vtep_is_refused() {
    if !etcd_or_skip() {
        return;
    }
    let lab = EtcdLab::start();
    lab.run(|| {
        let _a = connect(&lab, "a", 1);
        match Cluster::connect(&lab.endpoints(), DEFAULT_PREFIX, "a", vtep(7)) {
            Err(ClusterError::NodeNameTaken { node, vtep: v }) => {
                assert_eq!((node.as_str(), v), ("a", vtep(1)));
            }
            other => panic!("second node a: {other:?}"),
        }
        // Unreachable etcd: a clear error, quickly.
        let mut config = ClusterConfig::new(&["127.0.0.1:1".to_string()], "z", vtep(3));
        config.timeout = Duration::from_millis(300);
        let started = Instant::now();
        match Cluster::connect_with(config) {
            Err(e @ ClusterError::Unreachable { .. }) => {
                assert!(e.to_string().contains("http://127.0.0.1:1"), "{e}");
            }
            other => panic!("connect to nothing: {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2));
    });
}

/// The namespace file of the lab, for running a test that also kills etcd inside it.
fn lab_ns_file(lab: &EtcdLab) -> std::fs::File {
    lab.run(|| std::fs::File::open("/proc/thread-self/ns/net").expect("open own netns"))
}

/// Runs `f` inside the namespace `ns` on a fresh thread.
fn in_ns<T: Send>(ns: &std::fs::File, f: impl FnOnce() -> T + Send) -> T {
    tools::netns::in_netns(ns, f).expect("enter the lab's namespace")
}
