//! HAProxy's runtime API (the stats socket), for its stick tables: the
//! first real L7 integration (R2). On the active unit the replicator reads
//! `show table <t>`; on the standby it writes `set table <t> key <k>
//! data.server_id <id>` ahead of time and `clear table <t> key <k>` when
//! an entry expires, so the new active's HAProxy already knows where each
//! client goes.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// One stick-table entry: key, server id, milliseconds before it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StickEntry {
    pub key: String,
    pub server_id: u32,
    pub exp_ms: u64,
}

/// Sends one command and returns the whole answer (bounded).
pub(crate) async fn command(socket: &Path, cmd: &str) -> anyhow::Result<String> {
    let run = async {
        let mut s = UnixStream::connect(socket).await?;
        s.write_all(cmd.as_bytes()).await?;
        s.write_all(b"\n").await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        anyhow::Ok(out)
    };
    tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .map_err(|_| anyhow::anyhow!("HAProxy's runtime API at {} did not answer in 2 s", socket.display()))?
}

/// Parses `show table` output; entries without a server are skipped.
pub(crate) fn parse_table(out: &str) -> Vec<StickEntry> {
    out.lines()
        .filter(|l| l.starts_with("0x"))
        .filter_map(|l| {
            let mut key = None;
            let mut server_id = None;
            let mut exp = None;
            for field in l.split_whitespace() {
                if let Some(v) = field.strip_prefix("key=") {
                    key = Some(v.to_string());
                } else if let Some(v) = field.strip_prefix("server_id=") {
                    server_id = v.parse::<u32>().ok();
                } else if let Some(v) = field.strip_prefix("exp=") {
                    exp = v.parse::<u64>().ok();
                }
            }
            let server_id = server_id.filter(|s| *s != 0)?;
            Some(StickEntry { key: key?, server_id, exp_ms: exp.unwrap_or(0) })
        })
        .collect()
}

/// The entries of table `t`.
pub(crate) async fn show(socket: &Path, table: &str) -> anyhow::Result<Vec<StickEntry>> {
    let out = command(socket, &format!("show table {table}")).await?;
    if !out.starts_with("# table:") {
        anyhow::bail!("HAProxy refused `show table {table}`: {}", out.trim());
    }
    Ok(parse_table(&out))
}

/// The command binding `key` to server `id` in table `t`.
pub(crate) fn set_cmd(table: &str, key: &str, id: u32) -> String {
    format!("set table {table} key {key} data.server_id {id}")
}

/// The command removing `key` from table `t`.
pub(crate) fn clear_cmd(table: &str, key: &str) -> String {
    format!("clear table {table} key {key}")
}

/// Runs several commands on one connection (`;`-separated). HAProxy
/// answers nothing to a successful `set`/`clear`; any text is an error.
pub(crate) async fn run_many(socket: &Path, cmds: &[String]) -> anyhow::Result<()> {
    if cmds.is_empty() {
        return Ok(());
    }
    if let Some(bad) = cmds.iter().find(|c| c.contains(';') || c.contains('\n')) {
        anyhow::bail!("refusing a command with a separator in it: {bad:?}");
    }
    let out = command(socket, &cmds.join(";")).await?;
    let out = out.trim();
    if !out.is_empty() {
        anyhow::bail!("HAProxy answered: {}", out.lines().next().unwrap_or(out));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_show_table() {
        let out = "# table: web, type: ip, size:1048576, used:2\n0x55ea85587710: key=198.18.0.100 use=0 exp=1799000 server_id=2 server_key=-\n0x7f83cc0465c0: key=198.18.0.101 use=0 exp=1800000 server_id=0 server_key=-\n\n";
        let e = super::parse_table(out);
        assert_eq!(e, vec![super::StickEntry { key: "198.18.0.100".into(), server_id: 2, exp_ms: 1_799_000 }]);
    }
}
