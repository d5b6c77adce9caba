//! `duet-configsync`: the configsync service of one duet unit.

fn main() -> std::process::ExitCode {
    duet_runtime::service::main::<duet_configsync::ConfigSyncService>(duet_version::VERSION)
}
