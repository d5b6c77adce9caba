//! `duet-takeover`: the takeover service of one duet unit.

fn main() -> std::process::ExitCode {
    duet_runtime::service::main::<duet_takeover::Takeover>(duet_version::VERSION)
}
