//! `duet-election`: the election service of one duet unit.

fn main() -> std::process::ExitCode {
    duet_runtime::service::main::<duet_election::Election>(duet_version::VERSION)
}
