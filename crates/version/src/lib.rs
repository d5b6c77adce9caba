//! What `--version` prints for every duet binary.

/// The version and the commit it was built from (`DUET_COMMIT` from the
/// environment for a build outside a checkout; else "unknown").
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("DUET_COMMIT"), ")");
