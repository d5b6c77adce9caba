//! What the harness's own tests share: they look at the kernel with `ip`,
//! not with the harness's code under test.

use std::process::Command;

/// Names of the named network namespaces, as `ip netns list` prints them.
pub(crate) fn netns_names() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}
