//! `scripts/cluster.sh down` leaves nothing of a real node on the host: no
//! process, no mount, no network namespace, veth, route, iptables rule or
//! cgroup, no CNI cache entry and no state directory. The test starts a real
//! node of its own, runs a pod on it (so there are sandboxes, volumes, an
//! address and cgroups to clean up), stops it and inspects the host.
//!
//! `scripts/test.sh` runs it as root after the real-node phase, with no other
//! cluster of its own running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh");

/// A state directory for the test's own cluster; a short path, as the
/// containerd socket in it must fit a unix socket's name.
fn state_dir() -> PathBuf {
    PathBuf::from(format!("/tmp/appstack-teardown-{}", std::process::id()))
}

fn cluster_sh(state: &Path, args: &[&str]) -> Output {
    Command::new(SCRIPT)
        .args(args)
        .env("APPSTACK_CLUSTER_DIR", state)
        .output()
        .expect("run scripts/cluster.sh")
}

fn succeeded(what: &str, output: Output) -> String {
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("run {program}: {error}"))
}

/// The cgroup directories named `name` under any v1 hierarchy.
fn cgroups_named(name: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(|entry| {
            let path = entry.ok()?.path().join(name);
            path.exists().then_some(path)
        })
        .collect()
}

/// Processes whose command line names `text`.
fn processes_naming(text: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            entry.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(text).then_some(cmdline)
        })
        .collect()
}

/// Processes in the namespace `link` names (such as `net:[4026532345]`).
fn processes_in_namespace(kind: &str, link: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid = entry.file_name().into_string().ok()?;
            pid.parse::<u32>().ok()?;
            let target = std::fs::read_link(entry.path().join("ns").join(kind)).ok()?;
            (target.to_str()? == link).then_some(pid)
        })
        .collect()
}

/// Lines of the host's mount table that name `text`.
fn mounts_naming(text: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|line| line.contains(text))
        .map(str::to_string)
        .collect()
}

#[test]
#[ignore = "starts and stops a real node as root: scripts/test.sh runs it after the real-node phase"]
fn down_leaves_nothing_of_the_real_node_on_the_host() {
    let state = state_dir();
    let state_text = state.to_str().unwrap().to_string();
    let _ = cluster_sh(&state, &["down"]);
    succeeded("up --real-node", cluster_sh(&state, &["up", "--real-node"]));
    let settings: BTreeMap<String, String> = std::fs::read_to_string(state.join("real-node.env"))
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    let kubectl = format!(
        "{}/kubectl",
        succeeded("bin", cluster_sh(&state, &["bin"])).trim()
    );
    let kubeconfig = state.join("admin.kubeconfig");
    let kubectl_args = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
        all.extend_from_slice(args);
        run(&kubectl, &all)
    };
    // A pod of the node's sandbox image: enough for a sandbox, its network
    // namespace and address, its service-account token volume and cgroups.
    succeeded(
        "run a pod",
        kubectl_args(&[
            "run",
            "sleeper",
            "--image=appstack.test/pause:1",
            "--image-pull-policy=Never",
        ]),
    );
    succeeded(
        "the pod Ready",
        kubectl_args(&[
            "wait",
            "--for=condition=Ready",
            "pod/sleeper",
            "--timeout=120s",
        ]),
    );

    // What there is to clean up, seen while the node runs.
    let holder = std::fs::read_to_string(state.join("node-namespace.pid")).unwrap();
    let node_net = std::fs::read_link(format!("/proc/{}/ns/net", holder.trim())).unwrap();
    let node_net = node_net.to_str().unwrap().to_string();
    let host_if = &settings["HOST_IF"];
    let cgroup_root = &settings["CGROUP_ROOT"];
    let pod_cidr = &settings["POD_CIDR"];
    let ipam = state.join("node/ipam").join(&settings["CNI_NETWORK"]);
    assert!(!processes_in_namespace("net", &node_net).is_empty());
    assert!(run("ip", &["link", "show", host_if]).status.success());
    assert!(!cgroups_named(cgroup_root).is_empty());
    assert!(
        std::fs::read_dir(&ipam).unwrap().count() > 1,
        "the pod's address is allocated in {}",
        ipam.display()
    );
    assert!(!processes_naming(&state_text).is_empty());
    let routes = String::from_utf8(run("ip", &["route"]).stdout).unwrap();
    assert!(routes.contains(pod_cidr.as_str()), "{routes}");

    succeeded("down", cluster_sh(&state, &["down"]));

    assert!(!state.exists(), "the state directory is gone");
    assert_eq!(processes_naming(&state_text), Vec::<String>::new());
    assert_eq!(mounts_naming(&state_text), Vec::<String>::new());
    // The node's network namespace had no file: with no process left in it,
    // it is gone.
    assert_eq!(
        processes_in_namespace("net", &node_net),
        Vec::<String>::new()
    );
    let links = run("ip", &["-o", "link"]);
    let links = String::from_utf8(links.stdout).unwrap();
    assert!(
        !links.contains(&format!("{host_if}@")) && !links.contains(&format!(": {host_if}:")),
        "{links}"
    );
    assert_eq!(cgroups_named(cgroup_root), Vec::<PathBuf>::new());
    let routes = String::from_utf8(run("ip", &["route"]).stdout).unwrap();
    assert!(
        !routes.contains(pod_cidr.as_str()) && !routes.contains(&settings["SERVICE_CIDR"]),
        "{routes}"
    );
    // The node's iptables rules lived in its namespace; the host's tables
    // never held any of them.
    for family in ["iptables-save", "ip6tables-save"] {
        let rules = String::from_utf8(run(family, &[]).stdout).unwrap();
        for trace in [
            pod_cidr.as_str(),
            &settings["SERVICE_CIDR"],
            &settings["CNI_NETWORK"],
        ] {
            assert!(!rules.contains(trace), "{family} holds {trace}: {rules}");
        }
    }
    let cache = Path::new("/var/lib/cni/results");
    if cache.exists() {
        let leftovers: Vec<_> = std::fs::read_dir(cache)
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with(&format!("{}-", settings["CNI_NETWORK"])))
            .collect();
        assert_eq!(leftovers, Vec::<String>::new(), "libcni's cache");
    }
}
