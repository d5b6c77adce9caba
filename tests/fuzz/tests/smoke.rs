//! The short fuzz run of CI: every parser on its seeds and 20,000
//! mutations (the long run is `duet-fuzz --inputs 10000000`).

#[test]
fn every_parser_survives_a_short_run() {
    for t in duet_fuzz::targets() {
        let o = duet_fuzz::run(&t, 20_000, 7);
        assert!(o.failure.is_none(), "{}: {:?}", o.target, o.failure);
        assert_eq!(o.inputs, 20_000);
    }
}

/// The seeds parse: a target whose seeds are all refused would only test
/// the first check of its parser.
#[test]
fn the_seeds_are_accepted_inputs() {
    let carp = duet_fuzz::targets().into_iter().find(|t| t.name == "carp").expect("carp");
    for s in (carp.seeds)() {
        let h = duet_wire::Ipv4Header::parse(&s).expect("a seed's IPv4 header");
        assert!(duet_wire::Advert::parse(&s[h.header_len..]).is_ok());
    }
    let img = duet_fuzz::targets().into_iter().find(|t| t.name == "image-json").expect("image-json");
    let text = String::from_utf8((img.seeds)()[0].clone()).expect("UTF-8");
    let i: duet_proto::config::v1::Image =
        duet_proto::json::from_json(&text, "duet.config.v1.Image").expect("the seed image parses");
    duet_model::ImageContent::checked(&i, true).expect("the seed image is valid");
    let unit = duet_fuzz::targets().into_iter().find(|t| t.name == "unit-file").expect("unit-file");
    for s in (unit.seeds)() {
        let text = String::from_utf8(s).expect("UTF-8");
        // Valid as a file (paths not checked until use) or refused with
        // problems by key, never a panic.
        let _ = duet_config::from_toml(&text);
    }
}
