//! Real end-to-end tests of the smaller holes of issue 12 (item 9), as root, each against its own
//! daemon in a namespace the test makes: subnets no network may have (loopback, multicast,
//! link-local, "this network", reserved) are refused and make nothing; argument-less commands
//! refuse unknown fields; trunk VLAN lists are stored and shown sorted, each VLAN once. (Bad
//! sandbox names: `e2e_hardening.rs`, `root_bad_sandbox_names_are_refused`.) Without root each
//! test prints `skipped: needs root` (and fails under `CI=true`).

mod common;

use common::{ip, ns_link_names, raw_request, root_or_skip, Daemon, Lab};
use serde_json::Value;

/// The `IP/PREFIX` addresses of every interface in namespace `ns`.
fn all_addresses(ns: &str) -> Vec<String> {
    let out = common::run("ip", &["-n", ns, "-j", "addr", "show"]);
    assert!(out.status.success(), "ip addr show in {ns}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j prints JSON");
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|link| {
            let name = link["ifname"].as_str().unwrap_or("").to_string();
            link["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |a| format!("{name}:{}/{}", a["local"], a["prefixlen"]))
        })
        .collect()
}

#[test]
fn root_unusable_subnets_are_refused_and_make_nothing() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let sw = lab.sw.name.clone();
    let links = ns_link_names(&sw);
    let addrs = all_addresses(&sw);
    let networks = lab.d().ctl_json(&["network", "ls"]);
    for (i, (subnet, what)) in [
        ("127.0.0.0/8", "loopback"),
        ("127.5.0.0/16", "loopback"),
        ("224.0.0.0/24", "multicast"),
        ("239.255.0.0/16", "multicast"),
        ("169.254.0.0/16", "link-local"),
        ("169.254.10.0/24", "link-local"),
        ("0.0.0.0/8", "this network"),
        ("240.0.0.0/24", "reserved"),
        ("96.0.0.0/3", "loopback"),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("bad{i}");
        for driver in ["bridge", "overlay"] {
            let mut args = vec!["network", "create", &name, "--subnet", subnet];
            if driver == "overlay" {
                args.extend(["--driver", "overlay", "--vni", "77"]);
            }
            let err = lab.d().ctl_err(&args);
            assert!(
                err.contains("cannot be a network's subnet") && err.contains(what),
                "{driver} {subnet}: {err}"
            );
        }
    }
    // Nothing was made: no network, no gateway TAP, no address (the TAP once got 127.0.0.1/8).
    assert_eq!(lab.d().ctl_json(&["network", "ls"]), networks);
    assert_eq!(ns_link_names(&sw), links);
    assert_eq!(all_addresses(&sw), addrs);
    // A usable subnet next to them is still fine.
    lab.d()
        .ctl_ok(&["network", "create", "good", "--subnet", "10.77.0.0/24"]);
}

#[test]
fn root_argument_less_commands_refuse_unknown_fields() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    for cmd in ["port_list", "network_ls", "sandbox_ls"] {
        let s = lab.d().connect();
        let ok = raw_request(&s, format!("{{\"cmd\":\"{cmd}\"}}\n").as_bytes());
        assert_eq!(ok["ok"], true, "{cmd}: {ok}");
        for extra in [r#""name":"x""#, r#""bogus":1"#] {
            let s = lab.d().connect();
            let line = format!("{{\"cmd\":\"{cmd}\",{extra}}}\n");
            let v = raw_request(&s, line.as_bytes());
            assert_eq!(v["ok"], false, "{line}: {v}");
            assert_eq!(v["kind"], "invalid", "{line}: {v}");
            let msg = v["error"].as_str().unwrap_or("");
            assert!(msg.contains("unknown field"), "{line}: {v}");
        }
    }
}

#[test]
fn root_trunk_lists_are_stored_and_shown_sorted_once() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    let sw = lab.sw.name.clone();
    ip(&[
        "-n", &sw, "link", "add", "tr0", "type", "veth", "peer", "name", "tr0p",
    ]);
    lab.d().ctl_ok(&[
        "port",
        "add",
        "tr0",
        "--trunks",
        "30,10,30,20",
        "--trunks",
        "10",
    ]);
    let vlan = |d: &Daemon| d.port("tr0").expect("tr0 listed")["vlan"].clone();
    assert_eq!(vlan(lab.d()), "trunk:10,20,30");
    // Stored so: the same after a restart.
    drop(lab.daemon.take());
    lab.daemon = Some(Daemon::start(&lab.sw, &lab.dir.path));
    assert_eq!(vlan(lab.d()), "trunk:10,20,30");
}

/// The scheduling policy and real-time priority of the thread named `comm` of process `pid`
/// (/proc/PID/task/TID/stat: fields 40 `rt_priority` and 41 `policy`, counted after the
/// parenthesised name).
fn thread_policy(pid: i32, comm: &str) -> Option<(u32, u32)> {
    let stat = thread_file(pid, comm, "stat")?;
    // Fields after ") " start at field 3.
    let rest: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    Some((
        rest.get(40 - 3)?.parse().ok()?,
        rest.get(41 - 3)?.parse().ok()?,
    ))
}

/// The file `name` of the thread named `comm` of process `pid` (/proc/PID/task/TID/NAME).
fn thread_file(pid: i32, comm: &str, name: &str) -> Option<String> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let dir = task.ok()?.path();
        if std::fs::read_to_string(dir.join("comm")).ok()?.trim() == comm {
            return std::fs::read_to_string(dir.join(name)).ok();
        }
    }
    None
}

#[test]
fn root_the_datapath_thread_runs_real_time_when_asked() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    // By default: normal scheduling (policy 0, SCHED_OTHER).
    assert_eq!(thread_policy(lab.d().pid(), "datapath"), Some((0, 0)));
    drop(lab.daemon.take());
    lab.daemon = Some(Daemon::start_with(
        &lab.sw,
        &lab.dir.path,
        &["--datapath-rt-priority", "3"],
    ));
    // SCHED_FIFO (1) at priority 3, and only the datapath thread.
    assert_eq!(thread_policy(lab.d().pid(), "datapath"), Some((3, 1)));
    assert_eq!(thread_policy(lab.d().pid(), "vswitchd"), Some((0, 0)));
    // The thread still serves the control plane: a network's gateway port is attached by it.
    lab.d()
        .ctl_ok(&["network", "create", "rt", "--subnet", "10.77.9.0/24"]);
}

#[test]
fn a_real_time_priority_out_of_range_is_refused() {
    for bad in ["0", "100", "high"] {
        let out = common::run(common::VSWITCHD, &["--datapath-rt-priority", bad]);
        assert!(
            !out.status.success(),
            "--datapath-rt-priority {bad} accepted"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--datapath-rt-priority"), "{bad}: {err}");
    }
}

/// The CPUs the thread named `comm` of process `pid` may run on (`Cpus_allowed_list` of
/// /proc/PID/task/TID/status, as Linux writes it).
fn thread_cpus(pid: i32, comm: &str) -> Option<String> {
    let status = thread_file(pid, comm, "status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

#[test]
fn root_the_datapath_thread_stays_on_the_cpus_it_is_given() {
    if !root_or_skip() {
        return;
    }
    let mut lab = Lab::new();
    let all = thread_cpus(lab.d().pid(), "vswitchd").expect("the main thread's CPUs");
    assert_eq!(
        thread_cpus(lab.d().pid(), "datapath").as_deref(),
        Some(&*all)
    );
    let cpus = switch::event_loop::parse_cpu_list(&all).unwrap();
    let last = cpus.last().unwrap().to_string();
    drop(lab.daemon.take());
    lab.daemon = Some(Daemon::start_with(
        &lab.sw,
        &lab.dir.path,
        &["--datapath-cpus", &last],
    ));
    // Only the datapath thread moves.
    assert_eq!(thread_cpus(lab.d().pid(), "datapath"), Some(last));
    assert_eq!(thread_cpus(lab.d().pid(), "vswitchd"), Some(all));
    lab.d()
        .ctl_ok(&["network", "create", "pinned", "--subnet", "10.77.8.0/24"]);
}

#[test]
fn a_cpu_list_that_is_not_one_is_refused() {
    for bad in ["", "x", "3-1", "5000"] {
        let out = common::run(common::VSWITCHD, &["--datapath-cpus", bad]);
        assert!(!out.status.success(), "--datapath-cpus {bad:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--datapath-cpus"), "{bad:?}: {err}");
    }
}
