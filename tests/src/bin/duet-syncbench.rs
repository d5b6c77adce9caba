//! Temporary entry point of the configsync benchmark (to be folded into duet-bench).
fn main() -> anyhow::Result<()> {
    let changes = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let services = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let r = duet_tests::syncbench::run(changes, services)?;
    duet_tests::syncbench::print(&r);
    println!("{}", serde_json::to_string_pretty(&r)?);
    Ok(())
}
