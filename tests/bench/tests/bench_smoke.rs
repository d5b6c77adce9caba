//! A short run of the failover benchmark (one repetition of every system
//! and scenario), as CI runs it: it fails if a unit answered after the
//! other took over, if both answered one probe, or if the client was not
//! served again. Slow figures never fail it; they are printed.

use std::time::{Duration, Instant};

use duet_bench::{FailoverOptions, report, run_failover};
use duet_tests::lab_test;

#[test]
fn every_system_fails_over_with_one_unit_answering_at_a_time() {
    lab_test("bench_smoke", false, |l| {
        let opts = FailoverOptions {
            reps: 1,
            settle: Duration::from_secs(1),
            tail: Duration::from_secs(1),
            ..FailoverOptions::default()
        };
        let start = Instant::now();
        let reps = run_failover(l, &opts, |r| {
            eprintln!(
                "{} {}: unit {} -> {}, gap {:?} ms, old after new {}, error {:?}",
                r.system, r.scenario, r.old, r.new, r.gap_ms, r.old_after_new, r.error
            );
        })?;
        let summaries = report::summarize(&reps, &opts);
        eprintln!("{}\n{}", report::table(&summaries), report::goals_text(&report::goals(&reps, &summaries)));
        eprintln!("smoke run took {:.0} s", start.elapsed().as_secs_f64());
        assert_eq!(reps.len(), opts.systems.len() * opts.scenarios.len());
        for r in &reps {
            let what = format!("{} {}", r.system, r.scenario);
            assert_eq!(r.error, None, "{what}: not measured");
            assert_eq!(r.old_after_new, 0, "{what}: the old unit answered after the new one");
            assert_eq!(r.answered_twice, 0, "{what}: both units answered one probe");
            assert!(r.recovered, "{what}: unit {} never answered", r.new);
            assert!(r.answers_at_end > 0, "{what}: the client is not served at the end");
            assert_eq!(r.correctness_failure(), None, "{what}");
        }
        Ok(())
    });
}
