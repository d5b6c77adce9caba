//! Whatever the changes, losses and resends, the standby ends up with the
//! active's table (live entries), and the outbox stays bounded.

use std::collections::HashMap;

use duet_repl::{Applied, Op, Outbox, Shadow};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Event {
    Upsert(u8, u16),
    Delete(u8),
    Send { max: u8, lost: bool },
    Tick,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (any::<u8>(), any::<u16>()).prop_map(|(k, v)| Event::Upsert(k % 32, v)),
        2 => any::<u8>().prop_map(|k| Event::Delete(k % 32)),
        3 => (1u8..8, proptest::bool::weighted(0.2)).prop_map(|(max, lost)| Event::Send { max, lost }),
        1 => Just(Event::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_standby_converges_to_the_active(events in proptest::collection::vec(event(), 0..300)) {
        let mut truth: HashMap<u8, u16> = HashMap::new();
        let mut out: Outbox<u8, u16> = Outbox::new(64, 0);
        let mut shadow: Shadow<u8, u16> = Shadow::default();
        let far = u64::MAX;
        let resync = |out: &mut Outbox<u8, u16>, shadow: &mut Shadow<u8, u16>, truth: &HashMap<u8, u16>| {
            let seq = out.reset_after_snapshot();
            shadow.load_snapshot(truth.iter().map(|(k, v)| (*k, *v, far)), seq, 0);
        };
        for e in events {
            match e {
                Event::Upsert(k, v) => {
                    truth.insert(k, v);
                    if out.push(Op::Upsert { key: k, value: v, expires_ms: far }).is_err() {
                        resync(&mut out, &mut shadow, &truth);
                    }
                }
                Event::Delete(k) => {
                    truth.remove(&k);
                    if out.push(Op::Delete { key: k }).is_err() {
                        resync(&mut out, &mut shadow, &truth);
                    }
                }
                Event::Send { max, lost } => {
                    if let Some(b) = out.next_batch(max as usize) {
                        if lost {
                            out.rewind();
                        } else {
                            match shadow.apply(&b, 0) {
                                Applied::Ok { ack, .. } | Applied::Duplicate { ack } => out.ack(ack),
                                Applied::Gap { .. } => resync(&mut out, &mut shadow, &truth),
                            }
                        }
                    }
                }
                Event::Tick => out.rewind(),
            }
            prop_assert!(out.pending() <= 64);
        }
        // Drain.
        out.rewind();
        while let Some(b) = out.next_batch(16) {
            match shadow.apply(&b, 0) {
                Applied::Ok { ack, .. } | Applied::Duplicate { ack } => out.ack(ack),
                Applied::Gap { .. } => resync(&mut out, &mut shadow, &truth),
            }
        }
        let got: HashMap<u8, u16> = shadow.iter().map(|(k, h)| (*k, h.value)).collect();
        prop_assert_eq!(got, truth);
        prop_assert_eq!(out.lag(), 0);
    }
}
