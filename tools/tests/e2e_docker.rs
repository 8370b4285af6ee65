//! Real end-to-end tests against Docker, as root: a dockerd of the test's own (all state in a
//! temp dir, inside a namespace the test made; see `common::docker`) talking to vswitch's Docker
//! plugin endpoint over `/run/docker/plugins/vswitch-<unique>.sock`.
//!
//! The first tests serve the plugin with an in-memory backend, which checks the protocol end to
//! end: dockerd discovers the socket, activates the plugin, and drives networks, pools,
//! endpoints and joins through it. The others run a real vswitchd beside the dockerd, in the
//! same namespace (`--docker-plugin /run/docker/plugins/vswitch-<unique>.sock`, its state in the
//! test's temp dir): containers talk through the switch, and survive faults of either daemon.
//! Without root each test prints `skipped: needs root`, without dockerd `skipped: needs dockerd
//! (apt-get install docker.io)`; both fail under `CI=true`.

mod common;

use common::docker::*;
use common::*;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;
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

// ---------------------------------------------------------------------------------------------
// Against a real vswitchd

/// How long traffic may take to flow (debug daemons, two cores shared by several tests).
const FLOW_WAIT: Duration = Duration::from_secs(30);

/// One host of these tests: a namespace running vswitchd (its Docker plugin on a socket of
/// its own) and a dockerd. Fields drop in declaration order: dockerd first (while the plugin
/// still answers its last calls), then vswitchd, the socket file, the temp dir, the namespace.
struct DockerHost {
    docker: Dockerd,
    vswitchd: Daemon,
    /// The plugin's name: the `-d` and `--ipam-driver` of this host's networks.
    plugin: String,
    socket: RemoveOnDrop,
    dir: TempDir,
    ns: Netns,
    /// vswitchd's extra arguments, for a restart with the same ones.
    args: Vec<String>,
}

impl DockerHost {
    /// A namespace with vswitchd (plugin on) and dockerd, and the busybox image.
    fn start() -> DockerHost {
        DockerHost::start_with(None, &[])
    }

    /// As [`DockerHost::start`], in namespace `ns` if given, with vswitchd's `extra` arguments.
    fn start_with(ns: Option<Netns>, extra: &[&str]) -> DockerHost {
        let plugin = unique_plugin_name();
        let ns = ns.unwrap_or_else(|| docker_netns(&plugin));
        let dir = TempDir::new(&plugin);
        let socket = plugin_socket(&plugin);
        let guard = RemoveOnDrop(socket.clone());
        let mut args: Vec<String> = vec!["--docker-plugin".into(), socket.display().to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let vswitchd = Daemon::start_with(&ns, &dir.path.join("vswitchd"), &argv);
        assert!(
            socket.exists(),
            "vswitchd serves the plugin at {}",
            socket.display()
        );
        let docker = Dockerd::start(&ns);
        docker.import_busybox();
        DockerHost {
            docker,
            vswitchd,
            plugin,
            socket: guard,
            dir,
            ns,
            args,
        }
    }

    /// `docker network create -d PLUGIN --ipam-driver PLUGIN --subnet SUBNET EXTRA… NAME`;
    /// returns Docker's id.
    fn network(&self, name: &str, subnet: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "network",
            "create",
            "-d",
            &self.plugin,
            "--ipam-driver",
            &self.plugin,
            "--subnet",
            subnet,
        ];
        args.extend_from_slice(extra);
        args.push(name);
        self.docker.docker_ok(&args);
        self.docker.network_id(name)
    }

    /// `docker run -d --name NAME --network NET EXTRA… IMAGE sleep 600`.
    fn container(&self, name: &str, network: &str, extra: &[&str]) {
        let mut args = vec!["run", "-d", "--stop-timeout", "1", "--name", name];
        args.extend_from_slice(&["--network", network]);
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sleep", "600"]);
        self.docker.docker_ok(&args);
    }

    /// `docker exec C ARGS…`.
    fn exec(&self, c: &str, args: &[&str]) -> Output {
        let mut all = vec!["exec", c];
        all.extend_from_slice(args);
        self.docker.docker(&all)
    }

    /// One ping from container `c` to `target` (an address or a name).
    fn ping_once(&self, c: &str, target: &str) -> bool {
        self.exec(c, &["ping", "-c", "1", "-W", "1", target])
            .status
            .success()
    }

    /// Pings from `c` until `target` answers, or panics after [`FLOW_WAIT`].
    fn ping_until(&self, c: &str, target: &str) {
        wait_for(&format!("{c} to reach {target}"), FLOW_WAIT, || {
            self.ping_once(c, target).then_some(())
        });
    }

    /// A field of container `c` on network `net` (`IPAddress`, `MacAddress`, `EndpointID`).
    fn net_field(&self, c: &str, net: &str, field: &str) -> String {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{net}\").{field}}}}}");
        self.docker.docker_ok(&["inspect", "--format", &format, c])
    }

    /// The vswitch network of Docker network `id`, as `vswitchctl network inspect` shows it.
    fn inspect(&self, id: &str) -> Value {
        let v = self
            .vswitchd
            .ctl_json(&["network", "inspect", &format!("docker-{}", &id[..12])]);
        v[0].clone()
    }

    /// Whether vswitchd has the network of Docker network `id`.
    fn has_network(&self, id: &str) -> bool {
        let name = format!("docker-{}", &id[..12]);
        match self.vswitchd.ctl_json(&["network", "ls"]) {
            Value::Array(rows) => rows.iter().any(|r| r["name"] == name.as_str()),
            other => panic!("network ls --json: {other}"),
        }
    }

    /// The endpoints vswitchd has on the network of Docker network `id`.
    fn endpoints(&self, id: &str) -> usize {
        self.inspect(id)["Containers"]
            .as_object()
            .map_or(0, |c| c.len())
    }

    /// The links of the namespace whose names start with one of `prefixes`.
    fn links(&self, prefixes: &[&str]) -> Vec<String> {
        ns_link_names(&self.ns.name)
            .into_iter()
            .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
            .collect()
    }

    /// Kills vswitchd (SIGKILL) and starts it again with the same arguments and state.
    fn kill_and_restart_vswitchd(&mut self) {
        let status = self.vswitchd.signal(libc::SIGKILL, WAIT);
        assert!(status.is_some(), "vswitchd did not die of SIGKILL");
        let argv: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.vswitchd = Daemon::start_with(&self.ns, &self.dir.path.join("vswitchd"), &argv);
    }
}

/// Two containers on a vswitch network talk by address and by name, through the switch; a
/// second network is isolated from the first; a running container joins it (with `--ip`) and
/// leaves it; `--internal` gives no way out; our IPAM refuses an overlap; `docker network rm`
/// removes the vswitch network with every port and veth it had.
#[test]
fn containers_talk_through_vswitchd() {
    if !root_or_skip() || !dockerd_or_skip() {
        return;
    }
    let h = DockerHost::start();
    let a = h.network("neta", "10.213.11.0/24", &[]);
    // The Docker network is a vswitch network, found from Docker's id.
    let net = h.inspect(&a);
    assert_eq!(net["Id"], a.as_str(), "{net}");
    assert_eq!(
        net["IPAM"]["Config"][0]["Subnet"], "10.213.11.0/24",
        "{net}"
    );
    // Our IPAM refuses an overlap, and docker prints why.
    let err = h.docker.docker_err(&[
        "network",
        "create",
        "-d",
        &h.plugin,
        "--ipam-driver",
        &h.plugin,
        "--subnet",
        "10.213.11.128/25",
        "clash",
    ]);
    assert!(err.contains("overlapping subnets"), "{err}");
    // So does Docker's own IPAM with a subnet vswitch has.
    let err = h.docker.docker_err(&[
        "network",
        "create",
        "-d",
        &h.plugin,
        "--subnet",
        "10.213.11.0/24",
        "clash2",
    ]);
    assert!(err.contains("overlapping subnets"), "{err}");

    // Docker's own IPAM works too: it skips the subnets routed in its namespace (vswitchd's
    // `bridge` network holds 172.17.0.0/16), and vswitch takes the pool it chose.
    h.docker
        .docker_ok(&["network", "create", "-d", &h.plugin, "auto"]);
    let auto = h.docker.network_id("auto");
    let subnet = h.docker.docker_ok(&[
        "network",
        "inspect",
        "--format",
        "{{(index .IPAM.Config 0).Subnet}}",
        "auto",
    ]);
    assert_eq!(
        h.inspect(&auto)["IPAM"]["Config"][0]["Subnet"],
        subnet.as_str()
    );
    h.docker.docker_ok(&["network", "rm", "auto"]);
    assert!(!h.has_network(&auto));
    // Our IPAM without --subnet: the first default pool in Docker's order that is free
    // (172.17.0.0/16 is vswitchd's `bridge`).
    h.docker.docker_ok(&[
        "network",
        "create",
        "-d",
        &h.plugin,
        "--ipam-driver",
        &h.plugin,
        "auto",
    ]);
    let auto = h.docker.network_id("auto");
    assert_eq!(
        h.inspect(&auto)["IPAM"]["Config"][0]["Subnet"],
        "172.18.0.0/16"
    );
    h.docker.docker_ok(&["network", "rm", "auto"]);

    // macvlan (`-o parent`) with Docker's MTU option: the parent is the network's uplink, the
    // container's eth0 has the MTU.
    ip(&[
        "-n", &h.ns.name, "link", "add", "up0", "type", "veth", "peer", "name", "up1",
    ]);
    let m = h.network(
        "netm",
        "10.213.14.0/24",
        &[
            "-o",
            "parent=up0",
            "-o",
            "com.docker.network.driver.mtu=1400",
        ],
    );
    let net = h.inspect(&m);
    assert_eq!(net["Driver"], "macvlan", "{net}");
    assert_eq!(net["Options"]["parent"], "up0", "{net}");
    assert!(
        net["Ports"].as_array().unwrap().iter().any(|p| p == "up0"),
        "{net}"
    );
    let mtu = h.docker.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "netm",
        IMAGE,
        "cat",
        "/sys/class/net/eth0/mtu",
    ]);
    assert_eq!(mtu, "1400");
    h.docker.docker_ok(&["network", "rm", "netm"]);
    assert!(!h.has_network(&m));
    h.container("a1", "neta", &[]);
    h.container("a2", "neta", &[]);
    let ip2 = h.net_field("a2", "neta", "IPAddress");
    assert!(ip2.starts_with("10.213.11."), "{ip2}");
    h.ping_until("a1", &ip2);
    // Docker's embedded DNS answers for the network's containers.
    h.ping_until("a1", "a2");
    h.ping_until("a2", "a1");
    // Both MACs were learned by vswitch's bridge of this network, on their endpoints' ports.
    let vs_net = format!("docker-{}", &a[..12]);
    for c in ["a1", "a2"] {
        let mac = h.net_field(c, "neta", "MacAddress");
        let row = h
            .vswitchd
            .fdb_entry(&mac)
            .unwrap_or_else(|| panic!("{c}'s MAC {mac} is not in fdb show"));
        assert_eq!(row["network"], vs_net.as_str(), "{row}");
        assert!(row["port"].as_str().unwrap().starts_with("vse"), "{row}");
    }
    assert_eq!(h.endpoints(&a), 2);
    // trace works on the endpoints' ports: a frame from a1 to a2 goes out on a2's port only.
    let (ep1, ep2) = (
        h.net_field("a1", "neta", "EndpointID"),
        h.net_field("a2", "neta", "EndpointID"),
    );
    let (p1, p2) = (host_end(&h, &a, &ep1), host_end(&h, &a, &ep2));
    let flow = format!(
        "dl_src={},dl_dst={},ip,nw_src={},nw_dst={ip2},icmp",
        h.net_field("a1", "neta", "MacAddress"),
        h.net_field("a2", "neta", "MacAddress"),
        h.net_field("a1", "neta", "IPAddress"),
    );
    let trace = h
        .vswitchd
        .ctl_ok(&["trace", "--in-port", &p1, "--flow", &flow]);
    assert!(
        trace.contains(&format!("result:  output:{p2}\n")),
        "{trace}"
    );
    // The network and its endpoints are Docker's: vswitchctl leaves them to it.
    let err = h
        .vswitchd
        .ctl_err(&["network", "rm", &format!("docker-{}", &a[..12])]);
    assert!(err.contains("docker network rm"), "{err}");
    let err = h.vswitchd.ctl_err(&[
        "network",
        "disconnect",
        &format!("docker-{}", &a[..12]),
        &format!("docker:{}", &ep1[..12]),
    ]);
    assert!(err.contains("docker network disconnect"), "{err}");

    // A second network: isolated from the first.
    let b = h.network("netb", "10.213.12.0/24", &[]);
    h.container("b1", "netb", &[]);
    let ipb = h.net_field("b1", "netb", "IPAddress");
    assert!(!h.ping_once("a1", &ipb), "a1 reached b1 across networks");
    // Nor does anything of one network reach the other's bridge: b1's MAC is learned on netb
    // only (a1's was on neta only, above).
    let macb = h.net_field("b1", "netb", "MacAddress");
    let gwb = h.inspect(&b)["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .expect("netb has a gateway")
        .to_string();
    h.ping_until("b1", &gwb);
    let rows: Vec<Value> = h
        .vswitchd
        .fdb()
        .into_iter()
        .filter(|r| r["mac"].as_str() == Some(macb.as_str()))
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0]["network"],
        format!("docker-{}", &b[..12]),
        "{rows:?}"
    );
    // A running container joins it, at the address it asks for, and reaches b1 there.
    h.docker
        .docker_ok(&["network", "connect", "--ip", "10.213.12.50", "netb", "a1"]);
    let out = h.exec("a1", &["ip", "-4", "-o", "addr"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("inet 10.213.12.50/24"), "{text}");
    h.ping_until("a1", &ipb);
    assert_eq!(h.endpoints(&b), 2);
    h.docker.docker_ok(&["network", "disconnect", "netb", "a1"]);
    assert_eq!(h.endpoints(&b), 1);
    let out = h.exec("a1", &["ip", "-4", "-o", "addr"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("10.213.12."), "{text}");
    assert!(
        !h.ping_once("a1", &ipb),
        "a1 still reaches b1 after disconnect"
    );

    // --internal: no gateway, no default route; the vswitch network says it is internal.
    let i = h.network("neti", "10.213.13.0/24", &["--internal"]);
    assert_eq!(h.inspect(&i)["Internal"], true);
    let routes = h.docker.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "neti",
        IMAGE,
        "ip",
        "-4",
        "route",
    ]);
    assert!(routes.contains("10.213.13.0/24"), "{routes}");
    assert!(!routes.contains("default"), "{routes}");

    // Published ports go through the same code as `network connect --publish`: programmed in
    // vswitch's nftables table (`nat show`), and a host port taken twice is refused.
    h.container("p1", "neta", &["-p", "8080:80", "-p", "5353:53/udp"]);
    let ip = h.net_field("p1", "neta", "IPAddress");
    let nat = h.vswitchd.ctl_json(&["nat", "show"]);
    let mut published: Vec<String> = nat["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["bindings"].as_array().cloned().unwrap_or_default())
        .map(|b| {
            format!(
                "{}:{}->{}:{}/{}",
                b["host_ip"].as_str().unwrap_or("*"),
                b["host_ports"]["start"],
                b["sandbox_ip"].as_str().unwrap_or("?"),
                b["container_ports"]["start"],
                b["proto"].as_str().unwrap_or("?")
            )
        })
        .collect();
    published.sort();
    assert_eq!(
        published,
        [
            format!("*:5353->{ip}:53/udp"),
            format!("*:8080->{ip}:80/tcp")
        ],
        "{nat}"
    );
    let err = h.docker.docker_err(&[
        "run",
        "-d",
        "--network",
        "neta",
        "-p",
        "8080:81",
        IMAGE,
        "sleep",
        "600",
    ]);
    assert!(
        err.contains("host port 8080/tcp is already published"),
        "{err}"
    );

    // docker network rm removes the vswitch network, its ports and every veth.
    let left = h.docker.docker_ok(&["ps", "-aq"]);
    let mut rm = vec!["rm", "-f"];
    rm.extend(left.split_whitespace());
    h.docker.docker_ok(&rm);
    for (name, id) in [("neta", &a), ("netb", &b), ("neti", &i)] {
        h.docker.docker_ok(&["network", "rm", name]);
        assert!(!h.has_network(id), "vswitch still has {name}");
    }
    let ports: Vec<String> = h
        .vswitchd
        .ports()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .filter(|p| p.starts_with("vse") || p.starts_with("vsg"))
        .collect();
    assert!(ports.is_empty(), "ports left: {ports:?}");
    let left = h.links(&["vse", "vsc", "vsg"]);
    assert!(left.is_empty(), "links left: {left:?}");
}

/// `kill -9` of vswitchd while containers run: restarted with the same arguments, it attaches
/// the endpoints' host ends again and the containers talk with nothing recreated by hand. A
/// restart of dockerd makes no duplicate network or endpoint. Malformed plugin requests are
/// refused with `{"Err"}` and leave the stored state as it was.
#[test]
fn docker_state_survives_faults_of_either_daemon() {
    if !root_or_skip() || !dockerd_or_skip() {
        return;
    }
    let mut h = DockerHost::start();
    let a = h.network("neta", "10.213.21.0/24", &[]);
    h.container("a1", "neta", &[]);
    h.container("a2", "neta", &[]);
    let ip2 = h.net_field("a2", "neta", "IPAddress");
    h.ping_until("a1", &ip2);
    let ports_before: Vec<String> = h
        .vswitchd
        .ports()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();

    // An endpoint Docker made but never joined (dockerd died in between) does not outlive a
    // restart of vswitchd.
    let never = "e".repeat(64);
    let body = format!(r#"{{"NetworkID":"{a}","EndpointID":"{never}","Interface":{{}}}}"#);
    let (status, answer) =
        plugin_call(&h.socket.0, "NetworkDriver.CreateEndpoint", body.as_bytes());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(h.endpoints(&a), 3);

    h.kill_and_restart_vswitchd();
    assert!(h.vswitchd.log_text().contains("Docker never joined it"));
    let ports_after: Vec<String> = h
        .vswitchd
        .ports()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ports_after, ports_before,
        "the same ports after the restart"
    );
    assert_eq!(h.endpoints(&a), 2);
    h.ping_until("a1", &ip2);
    h.ping_until("a2", "a1");

    // An endpoint whose veth vanished while vswitchd was down (its container's namespace went
    // away) is forgotten at the next start, and logged; Docker removing that container later
    // gets "no endpoint" (it logs it and goes on), and a new container gets a new endpoint.
    let ep2 = h.net_field("a2", "neta", "EndpointID");
    let a2_port = host_end(&h, &a, &ep2);
    h.vswitchd
        .signal(libc::SIGKILL, WAIT)
        .expect("vswitchd dies of SIGKILL");
    let vse: Vec<String> = h.links(&["vse"]);
    assert_eq!(vse.len(), 2, "{vse:?}");
    ip(&["-n", &h.ns.name, "link", "del", &a2_port]);
    let argv: Vec<&str> = h.args.iter().map(String::as_str).collect();
    h.vswitchd = Daemon::start_with(&h.ns, &h.dir.path.join("vswitchd"), &argv);
    let log = h.vswitchd.log_text();
    assert!(log.contains("its container is gone"), "{log}");
    assert_eq!(h.endpoints(&a), 1);
    h.docker.docker_ok(&["rm", "-f", "a2"]);
    h.container("a2", "neta", &[]);
    h.ping_until("a1", "a2");
    assert_eq!(h.endpoints(&a), 2);

    // dockerd restarted: its containers stop (Leave, DeleteEndpoint), nothing is replayed
    // twice, and started again they get one endpoint each.
    h.docker.restart();
    assert!(h.has_network(&a));
    assert_eq!(h.endpoints(&a), 0, "dockerd's stop left endpoints");
    h.docker.docker_ok(&["start", "a1", "a2"]);
    h.ping_until("a1", "a2");
    assert_eq!(h.endpoints(&a), 2);
    // dockerd crashed (SIGKILL, its containers left running): on its start it kills them and
    // cleans up their endpoints (Leave, DeleteEndpoint); started again, one endpoint each.
    h.docker.crash_and_restart();
    wait_for("dockerd to clean up its old endpoints", FLOW_WAIT, || {
        (h.endpoints(&a) == 0).then_some(())
    });
    assert_eq!(h.links(&["vse", "vsc"]), Vec::<String>::new());
    h.docker.docker_ok(&["start", "a1", "a2"]);
    h.ping_until("a1", "a2");
    assert_eq!(h.endpoints(&a), 2);
    let nets: Vec<Value> = match h.vswitchd.ctl_json(&["network", "ls"]) {
        Value::Array(rows) => rows,
        other => panic!("{other}"),
    };
    let docker_nets = nets
        .iter()
        .filter(|n| n["name"].as_str().unwrap().starts_with("docker-"))
        .count();
    assert_eq!(docker_nets, 1, "{nets:?}");

    // Malformed and refused plugin calls: an Err each, the stored state unchanged.
    let before = api_state(&h.vswitchd);
    let socket = h.socket.0.clone();
    let unknown = "f".repeat(64);
    let ep = h.net_field("a1", "neta", "EndpointID");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "NetworkDriver.CreateNetwork",
            "{not json".into(),
            "malformed",
        ),
        (
            "NetworkDriver.CreateNetwork",
            format!(
                r#"{{"NetworkID":"{unknown}","Options":{{"com.docker.network.generic":{{"vswitch.bogus":"1"}}}},"IPv4Data":[{{"AddressSpace":"vswitch-local","Pool":"10.213.29.0/24"}}]}}"#
            ),
            "unknown option",
        ),
        (
            "NetworkDriver.CreateNetwork",
            format!(
                r#"{{"NetworkID":"{unknown}","Options":{{}},"IPv4Data":[],"IPv6Data":[{{"Pool":"fd00::/64"}}]}}"#
            ),
            "IPv6 is not supported",
        ),
        (
            "NetworkDriver.CreateNetwork",
            format!(
                r#"{{"NetworkID":"{unknown}","Options":{{}},"IPv4Data":[{{"AddressSpace":"vswitch-local","Pool":"10.213.29.0/24"}}]}}"#
            ),
            "no vswitch address pool",
        ),
        (
            "NetworkDriver.DeleteNetwork",
            format!(r#"{{"NetworkID":"{unknown}"}}"#),
            "no vswitch network",
        ),
        (
            "NetworkDriver.DeleteNetwork",
            format!(r#"{{"NetworkID":"{a}"}}"#),
            "active endpoints",
        ),
        (
            "NetworkDriver.Join",
            format!(r#"{{"NetworkID":"{a}","EndpointID":"{unknown}","SandboxKey":"/x"}}"#),
            "no endpoint",
        ),
        (
            "NetworkDriver.Join",
            format!(r#"{{"NetworkID":"{a}","EndpointID":"{ep}","SandboxKey":"/x"}}"#),
            "already joined",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            format!(
                r#"{{"NetworkID":"{a}","EndpointID":"{unknown}","Interface":{{"Address":"10.99.0.2/24"}}}}"#
            ),
            "outside",
        ),
        (
            "NetworkDriver.CreateEndpoint",
            format!(
                r#"{{"NetworkID":"{a}","EndpointID":"{unknown}","Interface":{{"AddressIPv6":"fd00::2/64"}}}}"#
            ),
            "IPv6 is not supported",
        ),
        (
            "IpamDriver.RequestPool",
            r#"{"AddressSpace":"vswitch-local","Pool":"10.213.21.0/25"}"#.into(),
            "overlapping subnets",
        ),
        (
            "IpamDriver.ReleasePool",
            r#"{"PoolID":"10.250.0.0/24"}"#.into(),
            "no address pool",
        ),
    ];
    for (call, body, want) in &cases {
        let (status, answer) = plugin_call(&socket, call, body.as_bytes());
        assert_eq!(status, 500, "{call} {body}: {answer}");
        let err = answer["Err"].as_str().unwrap_or_default();
        assert!(err.contains(want), "{call} {body}: {err:?} lacks {want:?}");
    }
    let after = api_state(&h.vswitchd);
    assert!(
        before == after,
        "a refused call changed the state: {before} -> {after}"
    );
    assert_eq!(h.endpoints(&a), 2);
    h.ping_until("a1", "a2");

    // While vswitchd runs: a container whose veth vanished behind Docker's back is forgotten
    // (and logged) when Docker next asks for an endpoint; its port goes with it.
    let ep2 = h.net_field("a2", "neta", "EndpointID");
    let port2 = host_end(&h, &a, &ep2);
    ip(&["-n", &h.ns.name, "link", "del", &port2]);
    h.container("a3", "neta", &[]);
    assert_eq!(h.endpoints(&a), 2, "a1 and a3");
    assert!(h.vswitchd.port(&port2).is_none(), "{port2} is still a port");
    let log = h.vswitchd.log_text();
    assert!(
        log.contains(&format!("docker endpoint {}", &ep2[..12])),
        "{log}"
    );
    h.ping_until("a3", "a1");
}

/// An overlay network across two hosts, each with its own dockerd and vswitchd, joined by an
/// underlay veth: containers on either side talk over VXLAN.
#[test]
fn overlay_network_across_two_docker_hosts() {
    if !root_or_skip() || !dockerd_or_skip() {
        return;
    }
    let base = unique_plugin_name();
    let ns1 = Netns::new(format!("{base}-h1"));
    let ns2 = Netns::new(format!("{base}-h2"));
    ip(&[
        "-n", &ns1.name, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns",
        &ns2.name,
    ]);
    for (ns, addr) in [(&ns1, "10.213.30.1/24"), (&ns2, "10.213.30.2/24")] {
        ip(&["-n", &ns.name, "addr", "add", addr, "dev", "ul0"]);
        ip(&["-n", &ns.name, "link", "set", "ul0", "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
    }
    let h1 = DockerHost::start_with(Some(ns1), &["--vtep", "10.213.30.1"]);
    let h2 = DockerHost::start_with(Some(ns2), &["--vtep", "10.213.30.2"]);
    let mut ids = Vec::new();
    for (h, peer, range) in [
        (&h1, "10.213.30.2", "10.213.31.0/26"),
        (&h2, "10.213.30.1", "10.213.31.64/26"),
    ] {
        let peer = format!("vswitch.peer={peer}");
        ids.push(h.network(
            "over",
            "10.213.31.0/24",
            &[
                "--ip-range",
                range,
                "-o",
                "vswitch.driver=overlay",
                "-o",
                "vswitch.vni=42",
                "-o",
                &peer,
            ],
        ));
        let net = h.inspect(ids.last().unwrap());
        assert_eq!(net["Driver"], "overlay", "{net}");
        assert_eq!(net["Options"]["vxlan.vni"], "42", "{net}");
    }
    h1.container("o1", "over", &["--ip", "10.213.31.11"]);
    h2.container("o2", "over", &["--ip", "10.213.31.12"]);
    h1.ping_until("o1", "10.213.31.12");
    h2.ping_until("o2", "10.213.31.11");
    // o2's MAC was learned on h1's VXLAN port.
    let mac = h2.net_field("o2", "over", "MacAddress");
    let row = h1
        .vswitchd
        .fdb_entry(&mac)
        .unwrap_or_else(|| panic!("o2's MAC {mac} is not in h1's fdb"));
    assert_eq!(row["remote"], "10.213.30.2", "{row}");
    h1.docker.docker_ok(&["rm", "-f", "o1"]);
    h2.docker.docker_ok(&["rm", "-f", "o2"]);
}

/// How long a cluster change may take to reach the other host (one watch event in practice).
const SPREAD: Duration = Duration::from_secs(10);

/// The names of the networks vswitchd has.
fn vswitch_networks(d: &Daemon) -> Vec<String> {
    d.ctl_json(&["network", "ls"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["name"].as_str().map(String::from))
        .collect()
}

/// A swarm-scope network through the plugin on two hosts, each with its own dockerd and
/// vswitchd (`--cluster` on one etcd; no Docker swarm), joined by an underlay: `docker network
/// create -o vswitch.scope=swarm -o vswitch.network=blue` on each host meets in the one
/// cluster network; containers on both hosts get distinct addresses from the cluster and ping
/// across; `docker network rm` on one host leaves the network to the other (which keeps
/// working), and the host can join again; `vswitchctl network rm` is refused while a host
/// has endpoints on it, and once allowed leaves nothing in etcd.
#[test]
fn swarm_network_across_two_docker_hosts() {
    if !common::etcd::etcd_or_skip() || !dockerd_or_skip() {
        return;
    }
    logs();
    let base = unique_plugin_name();
    let ns1 = Netns::new(format!("{base}-h1"));
    let ns2 = Netns::new(format!("{base}-h2"));
    // etcd's namespace is the underlay too: a bridge with a veth to each host.
    let hosts = [ns1.name.clone(), ns2.name.clone()];
    let lab = common::etcd::EtcdLab::start_on(|ns: &Netns| {
        ip(&["-n", &ns.name, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            "10.213.40.99/24",
            "dev",
            "br0",
        ]);
        ip(&["-n", &ns.name, "link", "set", "br0", "up"]);
        for (i, host) in hosts.iter().enumerate() {
            let u = format!("u{}", i + 1);
            ip(&[
                "-n", &ns.name, "link", "add", &u, "type", "veth", "peer", "name", "ul0", "netns",
                host,
            ]);
            ip(&["-n", &ns.name, "link", "set", &u, "master", "br0", "up"]);
            let addr = format!("10.213.40.{}/24", i + 1);
            ip(&["-n", host, "addr", "add", &addr, "dev", "ul0"]);
            ip(&["-n", host, "link", "set", "ul0", "up"]);
            ip(&["-n", host, "link", "set", "lo", "up"]);
        }
        Some("10.213.40.99".into())
    });
    let cluster = "etcd://10.213.40.99:2379";
    // Declared after etcd, so dropped before it.
    let h1 = DockerHost::start_with(
        Some(ns1),
        &[
            "--vtep",
            "10.213.40.1",
            "--cluster",
            cluster,
            "--node",
            "d1",
        ],
    );
    let h2 = DockerHost::start_with(
        Some(ns2),
        &[
            "--vtep",
            "10.213.40.2",
            "--cluster",
            cluster,
            "--node",
            "d2",
        ],
    );
    let subnet = "10.213.41.0/24";
    let swarm = ["-o", "vswitch.scope=swarm", "-o", "vswitch.network=blue"];

    // Refused with what to give: the name the hosts meet on, and this plugin's IPAM.
    let e = h1.docker.docker_err(&[
        "network",
        "create",
        "-d",
        &h1.plugin,
        "--ipam-driver",
        &h1.plugin,
        "--subnet",
        subnet,
        "-o",
        "vswitch.scope=swarm",
        "nameless",
    ]);
    assert!(e.contains("vswitch.network=NAME"), "{e}");
    let e = h1.docker.docker_err(&[
        "network",
        "create",
        "-d",
        &h1.plugin,
        "--subnet",
        subnet,
        "-o",
        "vswitch.scope=swarm",
        "-o",
        "vswitch.network=blue",
        "dockeripam",
    ]);
    assert!(e.contains("--ipam-driver"), "{e}");

    // (1) Created on h1: in etcd, and on h2 by the watcher before h2's Docker asks.
    let id1 = h1.network("blue1", subnet, &swarm);
    wait_for("blue on h2", SPREAD, || {
        vswitch_networks(&h2.vswitchd)
            .contains(&"blue".to_string())
            .then_some(())
    });
    let id2 = h2.network("blue2", subnet, &swarm);
    assert_ne!(id1, id2, "each dockerd makes up its own id");
    for h in [&h1, &h2] {
        let nets = vswitch_networks(&h.vswitchd);
        assert!(nets.contains(&"blue".to_string()), "{nets:?}");
        assert!(!nets.iter().any(|n| n.starts_with("docker-")), "{nets:?}");
        let net = h.vswitchd.ctl_json(&["network", "inspect", "blue"]);
        assert_eq!(net[0]["Scope"], "swarm", "{net}");
    }
    // Another subnet under the same name is refused on the joining host.
    let e = h2.docker.docker_err(&[
        "network",
        "create",
        "-d",
        &h2.plugin,
        "--ipam-driver",
        &h2.plugin,
        "--subnet",
        "10.213.42.0/24",
        "-o",
        "vswitch.scope=swarm",
        "-o",
        "vswitch.network=blue",
        "blue3",
    ]);
    assert!(e.contains("subnet"), "{e}");

    // (2) Two containers per host: four distinct addresses from the cluster's pool.
    h1.container("s1", "blue1", &[]);
    h2.container("s2", "blue2", &[]);
    h1.container("s3", "blue1", &[]);
    h2.container("s4", "blue2", &[]);
    let addr = |h: &DockerHost, c: &str, net: &str| h.net_field(c, net, "IPAddress");
    let ips = [
        addr(&h1, "s1", "blue1"),
        addr(&h2, "s2", "blue2"),
        addr(&h1, "s3", "blue1"),
        addr(&h2, "s4", "blue2"),
    ];
    let distinct: std::collections::BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 4, "{ips:?}");
    assert!(ips.iter().all(|ip| ip.starts_with("10.213.41.")), "{ips:?}");
    let held = lab.keys("/vswitch/pool/blue/");
    for ip in &ips {
        assert!(
            held.iter().any(|(k, _)| k.ends_with(&format!("/{ip}"))),
            "{ip} not held in etcd: {held:?}"
        );
    }
    // Across the hosts, by address; h2's station is a remote entry on h1.
    h1.ping_until("s1", &ips[1]);
    h2.ping_until("s2", &ips[0]);
    h1.ping_until("s3", &ips[3]);
    let mac2 = h2.net_field("s2", "blue2", "MacAddress");
    let row = h1
        .vswitchd
        .fdb_entry(&mac2)
        .unwrap_or_else(|| panic!("s2's MAC {mac2} is not in h1's fdb"));
    assert_eq!(row["remote"], "10.213.40.2", "{row}");

    // (3) The ordinary rule: not removed from the cluster while h2 has endpoints.
    let e = h2.vswitchd.ctl_err(&["network", "rm", "blue"]);
    assert!(e.contains("docker network rm"), "{e}");

    // (4) h1 leaves: its containers and its Docker network go; the cluster network stays.
    h1.docker.docker_ok(&["rm", "-f", "s1", "s3"]);
    h1.docker.docker_ok(&["network", "rm", "blue1"]);
    assert!(
        vswitch_networks(&h1.vswitchd).contains(&"blue".to_string()),
        "h1 keeps the cluster network"
    );
    let e = h1.vswitchd.ctl_err(&["network", "rm", "blue"]);
    assert!(e.contains("still has 2 endpoint"), "{e}");
    // h2 goes on: a new container gets an address and reaches the old one.
    h2.container("s5", "blue2", &[]);
    let ip5 = addr(&h2, "s5", "blue2");
    assert!(!ips.contains(&ip5), "{ip5} reused at once: {ips:?}");
    h2.ping_until("s5", &ips[1]);
    // h1 joins again under a new Docker id, and talks to h2 again.
    let id1b = h1.network("blue1b", subnet, &swarm);
    assert_ne!(id1b, id1);
    h1.container("s6", "blue1b", &[]);
    h1.ping_until("s6", &ip5);

    // (5) Everyone leaves; then the cluster network goes, everywhere, keys and all.
    h1.docker.docker_ok(&["rm", "-f", "s6"]);
    h2.docker.docker_ok(&["rm", "-f", "s2", "s4", "s5"]);
    h1.docker.docker_ok(&["network", "rm", "blue1b"]);
    h2.docker.docker_ok(&["network", "rm", "blue2"]);
    h1.vswitchd.ctl_ok(&["network", "rm", "blue"]);
    wait_for("blue gone from h2", SPREAD, || {
        (!vswitch_networks(&h2.vswitchd).contains(&"blue".to_string())).then_some(())
    });
    let left: Vec<(String, String)> = lab
        .keys("/vswitch/")
        .into_iter()
        .filter(|(k, _)| !k.starts_with("/vswitch/nodes/"))
        .collect();
    assert!(left.is_empty(), "keys left behind: {left:?}");
}

/// The host end of a joined endpoint's veth: the port its MAC is pinned to (a static entry).
fn host_end(h: &DockerHost, network: &str, endpoint: &str) -> String {
    let name = format!("docker-{}", &network[..12]);
    let inspect = h.vswitchd.ctl_json(&["network", "inspect", &name]);
    let mac = inspect[0]["Containers"][endpoint]["MacAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("no endpoint {endpoint} in {inspect}"))
        .to_ascii_lowercase();
    let row = h
        .vswitchd
        .fdb_entry(&mac)
        .unwrap_or_else(|| panic!("{mac} is not in the MAC table"));
    assert_eq!(row["static"], true, "{row}");
    row["port"].as_str().expect("a port name").to_string()
}

/// What the daemon holds, as its API shows it: networks with their containers, sandboxes, and
/// port names (not their counters).
fn api_state(d: &common::Daemon) -> Value {
    let nets = d.ctl_json(&["network", "ls"]);
    let inspected: Vec<Value> = nets
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| d.ctl_json(&["network", "inspect", n["name"].as_str().unwrap()]))
        .collect();
    let mut ports: Vec<String> = d
        .ctl_json(&["port", "list"])
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    ports.sort();
    serde_json::json!({
        "networks": inspected,
        "sandboxes": d.ctl_json(&["sandbox", "ls"]),
        "ports": ports,
    })
}

/// `--docker-plugin none` serves no plugin; a path vswitchd cannot serve stops it with a clear
/// message (only the default path, when not given, is allowed to fail with a warning).
#[test]
fn docker_plugin_flag() {
    if !root_or_skip() {
        return;
    }
    let name = unique_plugin_name();
    let ns = docker_netns(&name);
    let dir = TempDir::new(&name);
    let d = Daemon::start_with(&ns, &dir.path.join("off"), &["--docker-plugin", "none"]);
    assert!(
        d.log_text().contains("docker plugin off"),
        "{}",
        d.log_text()
    );
    drop(d);
    let net = format!("--net={}", ns.path().display());
    let socket = dir.path.join("bad.sock");
    let state = dir.path.join("bad-state");
    let out = run_with_timeout(
        "nsenter",
        &[
            &net,
            "--",
            VSWITCHD,
            "--socket",
            &socket.to_string_lossy(),
            "--state-dir",
            &state.to_string_lossy(),
            "--docker-plugin",
            "/dev/null/vswitch.sock",
        ],
        WAIT,
    )
    .expect("vswitchd exits by itself");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("serving the docker plugin at /dev/null/vswitch.sock"),
        "{err}"
    );
}
