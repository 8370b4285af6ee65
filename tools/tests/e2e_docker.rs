//! Real end-to-end tests against Docker, as root: a dockerd of the test's own (all state in a
//! temp dir, inside a namespace the test made; see `common::docker`) talking to vswitch's Docker
//! plugin endpoint over `/run/docker/plugins/vswitch-<unique>.sock`.
//!
//! These tests serve the plugin with an in-memory backend (no vswitchd yet), which checks the
//! protocol end to end: dockerd discovers the socket, activates the plugin, and drives networks,
//! pools, endpoints and joins through it. Without root each test prints `skipped: needs root`,
//! without dockerd `skipped: needs dockerd (apt-get install docker.io)`; both fail under
//! `CI=true`.

mod common;

use common::docker::*;
use common::*;
use std::net::Ipv4Addr;
use std::sync::Arc;
use tools::daemon::docker::memory::MemoryBackend;
use tools::daemon::docker::{
    AddressKind, BackendError, BackendResult, DockerBackend, DockerPlugin, EndpointInfo,
    EndpointSpec, IfAddr, JoinInfo, NetworkSpec, PoolInfo, PoolSpec, PortBinding, Protocol,
};

/// The plugin's log lines (every call with its body), shown with the output of a failed test.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("tools=debug")
        .with_test_writer()
        .try_init();
}

/// A namespace for this test's dockerd, named after its plugin (unique on the machine).
fn docker_netns(plugin: &str) -> Netns {
    Netns::new(format!("{plugin}-ns"))
}

#[test]
fn dockerd_harness_runs_a_container() {
    if !root_or_skip() || !dockerd_or_skip() {
        return;
    }
    let ns = docker_netns(&unique_plugin_name());
    let d = Dockerd::start(&ns);
    d.import_busybox();
    let images = d.docker_ok(&["image", "ls", "--format", "{{.Repository}}"]);
    assert!(images.lines().any(|l| l == IMAGE), "{images}");
    let ok = d.docker(&["run", "--rm", "--network", "none", IMAGE, "true"]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The exit code comes through, so the check above could have failed.
    let fails = d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(
        fails.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&fails.stderr)
    );
    let left = d.docker_ok(&["ps", "-aq"]);
    assert!(left.is_empty(), "--rm left containers: {left}");
}

#[test]
fn dockerd_discovers_the_plugin_and_drives_networks_and_pools() {
    if !root_or_skip() || !dockerd_or_skip() {
        return;
    }
    logs();
    let name = unique_plugin_name();
    let ns = docker_netns(&name);
    let socket = plugin_socket(&name);
    let _socket_guard = RemoveOnDrop(socket.clone());
    let backend = Arc::new(MemoryBackend::new());
    let plugin = DockerPlugin::serve(&socket, backend.clone()).expect("serve the plugin");
    assert_eq!(plugin.driver_name(), name);
    // Dropped before the plugin (declared after it).
    let d = Dockerd::start(&ns);

    let net = format!("{name}-net");
    d.docker_ok(&[
        "network",
        "create",
        "-d",
        &name,
        "--ipam-driver",
        &name,
        "--subnet",
        "10.213.1.0/24",
        "-o",
        "vswitch.driver=bridge",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "--internal",
        &net,
    ]);
    let id = d.network_id(&net);
    let spec = backend
        .network(&id)
        .expect("CreateNetwork reached the backend");
    assert_eq!(spec.name, format!("docker-{}", &id[..12]));
    assert_eq!(
        spec.subnet.map(|s| s.to_string()).as_deref(),
        Some("10.213.1.0/24")
    );
    assert_eq!(spec.gateway, Some(Ipv4Addr::new(10, 213, 1, 1)));
    assert_eq!(spec.mtu, Some(1400));
    assert!(spec.internal, "--internal reaches the backend");
    let calls = backend.calls();
    assert!(
        calls.iter().any(|c| c.starts_with("request_pool")),
        "{calls:?}"
    );
    let listed = d.docker_ok(&[
        "network",
        "ls",
        "--filter",
        &format!("driver={name}"),
        "--format",
        "{{.Name}} {{.Driver}}",
    ]);
    assert_eq!(listed, format!("{net} {name}"));

    // Our IPAM refuses an overlap, and docker prints the message.
    let err = d.docker_err(&[
        "network",
        "create",
        "-d",
        &name,
        "--ipam-driver",
        &name,
        "--subnet",
        "10.213.1.128/25",
        &format!("{net}2"),
    ]);
    assert!(err.contains("overlapping subnets"), "{err}");
    // An unknown option is refused clearly, and nothing is left behind.
    let err = d.docker_err(&[
        "network",
        "create",
        "-d",
        &name,
        "--ipam-driver",
        &name,
        "-o",
        "vswitch.bogus=1",
        &format!("{net}3"),
    ]);
    assert!(err.contains("unknown option -o vswitch.bogus"), "{err}");
    let after = d.docker_ok(&[
        "network",
        "ls",
        "--filter",
        &format!("driver={name}"),
        "--format",
        "{{.Name}}",
    ]);
    assert_eq!(after, net, "a refused network must not be listed");

    d.docker_ok(&["network", "rm", &net]);
    assert!(
        backend.network(&id).is_none(),
        "DeleteNetwork reached the backend"
    );
    let calls = backend.calls();
    assert!(
        calls.iter().any(|c| c.starts_with("release_pool")),
        "{calls:?}"
    );
    assert!(plugin.stats().ok.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

/// The in-memory backend, with a real veth pair made in the dockerd's namespace on join (and
/// removed on leave), so that Docker has an interface to move into the container.
struct VethBackend {
    inner: MemoryBackend,
    netns: String,
}

impl DockerBackend for VethBackend {
    fn create_network(&self, spec: &NetworkSpec) -> BackendResult<()> {
        self.inner.create_network(spec)
    }
    fn delete_network(&self, docker_id: &str) -> BackendResult<()> {
        self.inner.delete_network(docker_id)
    }
    fn create_endpoint(&self, spec: &EndpointSpec) -> BackendResult<EndpointInfo> {
        self.inner.create_endpoint(spec)
    }
    fn endpoint_info(&self, network: &str, endpoint: &str) -> BackendResult<EndpointInfo> {
        self.inner.endpoint_info(network, endpoint)
    }
    fn delete_endpoint(&self, network: &str, endpoint: &str) -> BackendResult<()> {
        self.inner.delete_endpoint(network, endpoint)
    }
    fn join(&self, network: &str, endpoint: &str, sandbox_key: &str) -> BackendResult<JoinInfo> {
        let info = self.inner.join(network, endpoint, sandbox_key)?;
        let port = self
            .inner
            .endpoint_port(network, endpoint)
            .unwrap_or_default();
        let made = ip_ok(&[
            "-n",
            &self.netns,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            &info.ifname,
        ]) && ip_ok(&["-n", &self.netns, "link", "set", &port, "up"]);
        if !made {
            let _ = self.inner.leave(network, endpoint);
            return Err(BackendError::internal(format!(
                "cannot make the veth {port}"
            )));
        }
        Ok(info)
    }
    fn leave(&self, network: &str, endpoint: &str) -> BackendResult<()> {
        if let Some(port) = self.inner.endpoint_port(network, endpoint) {
            let _ = ip_ok(&["-n", &self.netns, "link", "del", &port]);
        }
        self.inner.leave(network, endpoint)
    }
    fn publish(
        &self,
        network: &str,
        endpoint: &str,
        bindings: &[PortBinding],
    ) -> BackendResult<()> {
        self.inner.publish(network, endpoint, bindings)
    }
    fn unpublish(&self, network: &str, endpoint: &str) -> BackendResult<()> {
        self.inner.unpublish(network, endpoint)
    }
    fn request_pool(&self, spec: &PoolSpec) -> BackendResult<PoolInfo> {
        self.inner.request_pool(spec)
    }
    fn release_pool(&self, pool: &str) -> BackendResult<()> {
        self.inner.release_pool(pool)
    }
    fn request_address(
        &self,
        pool: &str,
        address: Option<Ipv4Addr>,
        kind: AddressKind,
    ) -> BackendResult<IfAddr> {
        self.inner.request_address(pool, address, kind)
    }
    fn release_address(&self, pool: &str, address: Ipv4Addr) -> BackendResult<()> {
        self.inner.release_address(pool, address)
    }
}

#[test]
fn a_container_joins_through_the_plugin() {
    if !root_or_skip() || !dockerd_or_skip() {
        return;
    }
    logs();
    let name = unique_plugin_name();
    let ns = docker_netns(&name);
    let socket = plugin_socket(&name);
    let _socket_guard = RemoveOnDrop(socket.clone());
    let backend = Arc::new(VethBackend {
        inner: MemoryBackend::new(),
        netns: ns.name.clone(),
    });
    let _plugin = DockerPlugin::serve(&socket, backend.clone()).expect("serve the plugin");
    let d = Dockerd::start(&ns);
    d.import_busybox();

    let net = format!("{name}-net");
    d.docker_ok(&[
        "network",
        "create",
        "-d",
        &name,
        "--ipam-driver",
        &name,
        "--subnet",
        "10.213.2.0/24",
        &net,
    ]);
    let id = d.network_id(&net);
    let out = d.docker_ok(&[
        "run",
        "--rm",
        "--network",
        &net,
        IMAGE,
        "sh",
        "-c",
        "ip -4 -o addr show dev eth0; cat /sys/class/net/eth0/address; ip route show default",
    ]);
    // The address came from our IPAM, the MAC from CreateEndpoint, the route from Join.
    assert!(out.contains("inet 10.213.2.2/24"), "{out}");
    assert!(out.contains("02:42:0a:d5:02:02"), "{out}");
    assert!(out.contains("default via 10.213.2.1 dev eth0"), "{out}");
    let calls = backend.inner.calls();
    for want in ["create_endpoint", "join", "leave", "delete_endpoint"] {
        assert!(
            calls.iter().any(|c| c.starts_with(want)),
            "no {want} in {calls:?}"
        );
    }
    // The container is gone: its veth is gone from dockerd's namespace, its address is free.
    let links = ns_link_names(&ns.name);
    assert!(
        !links
            .iter()
            .any(|l| l.starts_with("vmh") || l.starts_with("vmc")),
        "{links:?}"
    );
    // --ip on a network of our IPAM.
    let out = d.docker_ok(&[
        "run",
        "--rm",
        "--network",
        &net,
        "--ip",
        "10.213.2.77",
        IMAGE,
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "dev",
        "eth0",
    ]);
    assert!(out.contains("inet 10.213.2.77/24"), "{out}");
    // Published ports reach the backend as Docker's bindings, and go away with the container.
    let cid = d.docker_ok(&[
        "run",
        "-d",
        "--network",
        &net,
        "-p",
        "8080:80",
        "-p",
        "127.0.0.1:5353:53/udp",
        IMAGE,
        "sleep",
        "600",
    ]);
    let format = format!("{{{{(index .NetworkSettings.Networks \"{net}\").EndpointID}}}}");
    let ep = d.docker_ok(&["inspect", "--format", &format, &cid]);
    let mut bound = backend.inner.bindings(&id, &ep);
    bound.sort_by_key(|b| b.container_port);
    assert_eq!(
        bound,
        vec![
            PortBinding {
                protocol: Protocol::Udp,
                container_port: 53,
                host_ip: Some(Ipv4Addr::LOCALHOST),
                host_port: 5353,
                host_port_end: 5353
            },
            PortBinding {
                protocol: Protocol::Tcp,
                container_port: 80,
                host_ip: None,
                host_port: 8080,
                host_port_end: 8080
            },
        ]
    );
    d.docker_ok(&["rm", "-f", &cid]);
    assert!(backend.inner.bindings(&id, &ep).is_empty());
    d.docker_ok(&["network", "rm", &net]);
    assert!(backend.inner.network(&id).is_none());
}

#[test]
fn dockerd_restart_replays_nothing_twice() {
    if !root_or_skip() || !dockerd_or_skip() {
        return;
    }
    logs();
    let name = unique_plugin_name();
    let ns = docker_netns(&name);
    let socket = plugin_socket(&name);
    let _socket_guard = RemoveOnDrop(socket.clone());
    let backend = Arc::new(VethBackend {
        inner: MemoryBackend::new(),
        netns: ns.name.clone(),
    });
    let plugin = DockerPlugin::serve(&socket, backend.clone()).expect("serve the plugin");
    let mut d = Dockerd::start(&ns);
    d.import_busybox();
    let net = format!("{name}-net");
    d.docker_ok(&[
        "network",
        "create",
        "-d",
        &name,
        "--ipam-driver",
        &name,
        "--subnet",
        "10.213.3.0/24",
        &net,
    ]);
    let id = d.network_id(&net);
    let cid = d.docker_ok(&[
        "run",
        "-d",
        "--stop-timeout",
        "1",
        "--network",
        &net,
        IMAGE,
        "sleep",
        "600",
    ]);
    let before = backend.inner.calls();

    d.restart();

    // dockerd stopped the container on its way down (Leave, DeleteEndpoint) and replayed no
    // network or pool: the network is the same one, and no call was refused.
    let replayed: Vec<String> = backend.inner.calls()[before.len()..].to_vec();
    assert!(
        !replayed
            .iter()
            .any(|c| c.starts_with("create_network") || c.starts_with("request_pool")),
        "{replayed:?}"
    );
    assert_eq!(
        plugin
            .stats()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(d.network_id(&net), id);
    assert!(backend.inner.network(&id).is_some());
    // The container starts again on the same network: a new endpoint, and (no quick reuse of
    // released addresses) the next address.
    d.docker_ok(&["start", &cid]);
    let out = d.docker_ok(&[
        "exec", &cid, "ip", "-4", "-o", "addr", "show", "dev", "eth0",
    ]);
    assert!(out.contains("inet 10.213.3.3/24"), "{out}");
    d.docker_ok(&["rm", "-f", &cid]);
    d.docker_ok(&["network", "rm", &net]);
    assert!(backend.inner.network(&id).is_none());
}
