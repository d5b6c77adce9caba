//! `duet-replicator`: the replicator service of one duet unit.

fn main() -> std::process::ExitCode {
    duet_runtime::service::main::<duet_replicator::Replicator>(duet_version::VERSION)
}
