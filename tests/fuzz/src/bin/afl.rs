//! `duet-fuzz-afl`: the coverage-guided harness, for AFL++ through `cargo
//! afl` (`scripts/fuzz-afl.sh` builds and runs it). It feeds one parser of
//! `duet_fuzz::targets()`, named by `DUET_FUZZ_TARGET`, with afl-fuzz's
//! inputs; a broken invariant (a re-emit that differs, a value out of
//! range) is a panic, which AFL records as a crash, like any other panic.

fn main() {
    let name = std::env::var("DUET_FUZZ_TARGET").unwrap_or_default();
    let targets = duet_fuzz::targets();
    let Some(t) = targets.iter().find(|t| t.name == name) else {
        let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
        eprintln!("DUET_FUZZ_TARGET={name:?}: name one of {}", names.join(", "));
        std::process::exit(2);
    };
    let check = t.check;
    afl::fuzz!(|data: &[u8]| {
        if let Err(why) = check(data) {
            panic!("{name}: {why}");
        }
    });
}
