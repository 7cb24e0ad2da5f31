//! `scripts/cluster.sh` and the state directory it is pointed at: a
//! directory the script did not create is never used or removed.

use std::path::{Path, PathBuf};
use std::process::Output;

/// A new directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "appstack-cluster-script-{label}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cluster_sh(state: &Path, command: &str) -> Output {
    std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"))
        .arg(command)
        .env("APPSTACK_CLUSTER_DIR", state)
        // Were the guard to let `up` through, it must not build anything.
        .env("APPSTACK_CACHE_DIR", state.join("no-cache"))
        .output()
        .expect("run scripts/cluster.sh")
}

#[test]
#[ignore = "runs scripts/cluster.sh: scripts/test.sh runs it"]
fn a_directory_the_script_did_not_create_is_never_used_or_removed() {
    let home = TempDir::new("user");
    let notes = home.path().join("notes.txt");
    std::fs::write(&notes, "mine").unwrap();
    for command in ["down", "up"] {
        let output = cluster_sh(home.path(), command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command} went ahead: {stderr}");
        assert!(
            stderr.contains("was not created by scripts/cluster.sh")
                && stderr.contains("APPSTACK_CLUSTER_DIR"),
            "{command}: {stderr}"
        );
        assert_eq!(
            std::fs::read_to_string(&notes).unwrap(),
            "mine",
            "{command} left the user's file alone"
        );
        assert!(
            !home.path().join(".appstack-cluster").exists(),
            "{command} did not claim the directory"
        );
    }

    // An empty directory is no cluster to stop: `down` leaves it.
    let empty = TempDir::new("empty");
    let output = cluster_sh(empty.path(), "down");
    assert!(output.status.success());
    assert!(empty.path().is_dir());
}
