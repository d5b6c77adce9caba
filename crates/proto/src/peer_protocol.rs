//! The version of the protocols the two units of a pair speak to each
//! other (U4): configsync's peer link (push, held, fetch) and the
//! replicator's stream. Every peer call carries it in its metadata; a unit
//! serves a partner at most one version away (a rolling upgrade goes one
//! release at a time: upgrade the standby, hand over, upgrade the other)
//! and refuses one further away with both versions and the fix. A unit
//! from before the version was sent sends none, taken as version 1.

/// This build's version of the peer protocols.
pub const VERSION: u32 = 1;

/// The metadata key.
pub const METADATA: &str = "duet-peer-protocol";

/// Adds this build's version to a peer call's metadata.
pub fn stamp(md: &mut tonic::metadata::MetadataMap) {
    md.insert(METADATA, tonic::metadata::MetadataValue::from(VERSION));
}

/// The version a peer call carries (none: 1, the first).
pub fn of(md: &tonic::metadata::MetadataMap) -> u32 {
    md.get(METADATA).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// Whether a partner speaking `theirs` can be served by a unit speaking
/// `ours`; the refusal says both versions and what to do.
pub fn check(theirs: u32, ours: u32) -> Result<(), String> {
    if theirs.abs_diff(ours) <= 1 {
        return Ok(());
    }
    Err(format!(
        "the partner speaks peer protocol {theirs}, this unit {ours}: units more than one version apart cannot sync; \
         upgrade one release at a time (the standby first, hand over, then the other)"
    ))
}

/// The refusal of a peer call whose version is too far from this build's,
/// as a gRPC status (FAILED_PRECONDITION).
pub fn refuse_unless_compatible(md: &tonic::metadata::MetadataMap) -> Result<(), tonic::Status> {
    check(of(md), VERSION).map_err(tonic::Status::failed_precondition)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_version_apart_is_served_further_is_refused_with_both_versions() {
        assert!(check(1, 1).is_ok() && check(2, 1).is_ok() && check(1, 2).is_ok());
        let e = check(3, 1).unwrap_err();
        assert!(e.contains("peer protocol 3, this unit 1") && e.contains("one release at a time"), "{e}");
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(of(&md), 1, "a unit from before the field speaks 1");
        stamp(&mut md);
        assert_eq!(of(&md), VERSION);
        md.insert(METADATA, tonic::metadata::MetadataValue::from(9u32));
        let s = refuse_unless_compatible(&md).unwrap_err();
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
    }
}
