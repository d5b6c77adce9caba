//! The fault lab's short fixed-seed set, as CI runs it (issue 17): seven
//! schedules of whole-pair faults, every invariant checked
//! (`duet_bench::chaos`). Over the lab's first eight kinds as they were:
//! seed 107, whose configuration write racing a handover once lost an
//! acknowledged generation (fixed; its test is in
//! `tests/tests/configsync.rs`), and seed 1, whose active election frozen
//! 9.6 s woke to the address on both units for a few ms (fixed: the core
//! steps down before any input, and a role snapshot waits for the driver's
//! next pulse; scenario tests in `crates/carp/tests/scenarios.rs`). Over
//! every kind: seed 23 (a handover during a resync, a write racing a
//! handover, partitions, a full state directory, a crash); 28 froze the
//! standby's election past its timeout, and on waking it took the role
//! over the active's unread adverts (fixed; scenario test); 37 froze it
//! 2.6 s, short of its timeout yet past its deadline, and the same
//! happened (fixed in the election's driver: a late timer waits for the
//! packets that arrived meanwhile); 47 ends with a crash of the active,
//! after which the lab judged the connections before TCP's backed-off
//! retransmission reached the new active (fixed in the lab: it waits twice
//! the last outage first, and names the fault under way when the next
//! answer was due); 12 froze the active's election 3.2 s, and its
//! takeover judged it hung at the HA timeout itself, 1.9 ms after the
//! partner took the address (fixed: judged 100 ms before it,
//! `plan::hung_after`). The long run is `duet-bench chaos --schedules 100`.
//! Outage bounds are a debug build's: a planned handover may take 250 ms
//! here (10 ms is the release build's bound in the benchmark).

use std::time::Instant;

use duet_bench::chaos::{ChaosOptions, FaultKind, goals, run_chaos, table};
use duet_bench::report;

#[test]
fn fixed_seed_fault_schedules_keep_every_invariant() {
    if !duet_testkit::require_root("fixed_seed_fault_schedules_keep_every_invariant") {
        return;
    }
    let regressions = ChaosOptions {
        seeds: vec![107, 1],
        kinds: FaultKind::FIRST_EIGHT.to_vec(),
        faults: 6,
        handover_ms: 250.0,
        ..ChaosOptions::default()
    };
    let every_kind = ChaosOptions { seeds: vec![23, 28, 37, 47, 12], kinds: Vec::new(), ..regressions.clone() };
    let start = Instant::now();
    let mut results = Vec::new();
    for opts in [&regressions, &every_kind] {
        results.extend(run_chaos(opts, |line| eprintln!("{line}")).expect("running the schedules"));
    }
    let g = goals(&results);
    eprintln!("{}\n{}", table(&results), report::goals_text(&g));
    eprintln!("the chaos set took {:.0} s", start.elapsed().as_secs_f64());
    assert_eq!(results.len(), 7);
    assert!(results.iter().all(|r| r.faults.len() == regressions.faults), "every fault ran");
    assert!(report::correct(&g), "{}", report::goals_text(&g));
}
