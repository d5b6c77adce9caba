//! Every field of every message of the image's content is carried by the
//! conversion: walking the descriptors (so a field added to the proto is
//! tested without touching this file), each field is set to a valid
//! non-default value on a valid base message, converted proto -> model ->
//! proto, and must come back with that value. A field the model forgets
//! fails here.

use std::collections::BTreeMap;

use duet_model::Problem;
use duet_proto::config::v1 as pb;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};

/// Decodes a message, converts it to the model and back, and encodes it.
type Trip = fn(&[u8]) -> Result<Vec<u8>, Vec<Problem>>;

fn trip<M, T>(bytes: &[u8]) -> Result<Vec<u8>, Vec<Problem>>
where
    M: Message + Default + for<'a> From<&'a T>,
    T: for<'a> TryFrom<&'a M, Error = Vec<Problem>>,
{
    let m = M::decode(bytes).expect("the test's message decodes");
    let t = T::try_from(&m)?;
    Ok(M::from(&t).encode_to_vec())
}

/// Per message: the round trip and a valid base message (fields at their
/// proto defaults where that is valid, so that setting one shows).
/// The smallest valid virtual service: no real servers, no persistence message.
fn web() -> pb::VirtualService {
    pb::VirtualService {
        name: "web".into(),
        address: "198.18.0.10".into(),
        port: 80,
        protocol: pb::Protocol::Tcp as i32,
        scheduler: pb::Scheduler::RoundRobin as i32,
        ..Default::default()
    }
}

#[test]
fn no_persistence_message_is_the_default_persistence() {
    let m = web();
    let v = duet_model::VirtualService::try_from(&m).expect("valid");
    assert_eq!(v.persistence, duet_model::Persistence::default());
    assert_eq!(pb::VirtualService::from(&v), m);
}

fn subjects() -> BTreeMap<&'static str, (Trip, Vec<u8>)> {
    let mut s: BTreeMap<&'static str, (Trip, Vec<u8>)> = BTreeMap::new();
    s.insert(
        "duet.config.v1.HaSettings",
        (
            trip::<pb::HaSettings, duet_model::HaSettings>,
            pb::HaSettings { timeout_s: 3, ..Default::default() }.encode_to_vec(),
        ),
    );
    s.insert(
        "duet.config.v1.Interface",
        (
            trip::<pb::Interface, duet_model::Interface>,
            pb::Interface {
                name: "eth0".into(),
                unit1: "198.18.0.1/24".into(),
                unit2: "198.18.0.2/24".into(),
                shared: "198.18.0.10/24".into(),
                ha_check: false,
            }
            .encode_to_vec(),
        ),
    );
    s.insert(
        "duet.config.v1.VirtualService",
        (trip::<pb::VirtualService, duet_model::VirtualService>, web().encode_to_vec()),
    );
    s.insert(
        "duet.config.v1.RealServer",
        (
            trip::<pb::RealServer, duet_model::RealServer>,
            pb::RealServer { address: "198.19.0.1".into(), port: 80, ..Default::default() }.encode_to_vec(),
        ),
    );
    s.insert(
        "duet.config.v1.Persistence",
        (trip::<pb::Persistence, duet_model::Persistence>, pb::Persistence::default().encode_to_vec()),
    );
    s
}

/// A valid value of `field` other than its default (and other than the
/// base's): by name where the kind alone cannot say what is valid.
fn value(pool: &DescriptorPool, msg: &str, field: &FieldDescriptor) -> Value {
    let message = |name: &str, m: &dyn Fn() -> Vec<u8>| {
        let d = pool.get_message_by_name(name).expect("known message");
        Value::Message(DynamicMessage::decode(d, m().as_slice()).expect("decodes"))
    };
    match (msg, field.name()) {
        ("duet.config.v1.HaSettings", "timeout_s") => return Value::U32(6),
        ("duet.config.v1.HaSettings", "vhid") => return Value::U32(7),
        ("duet.config.v1.HaSettings", "initial_wait_s") => return Value::U32(30),
        ("duet.config.v1.HaSettings", "fast_interval_ms") => return Value::U32(50),
        ("duet.config.v1.HaSettings", "fast_dead_factor") => return Value::U32(5),
        ("duet.config.v1.HaSettings", "sync_interval_s") => return Value::U32(60),
        ("duet.config.v1.Interface", "name") => return Value::String("eth1".into()),
        ("duet.config.v1.Interface", "unit1") => return Value::String("198.18.0.3/24".into()),
        ("duet.config.v1.Interface", "unit2") => return Value::String("198.18.0.4/24".into()),
        ("duet.config.v1.Interface", "shared") => return Value::String("198.18.0.11/24".into()),
        ("duet.config.v1.VirtualService", "name") => return Value::String("api".into()),
        ("duet.config.v1.VirtualService", "address") => return Value::String("198.18.0.11".into()),
        ("duet.config.v1.VirtualService", "port") => return Value::U32(8080),
        ("duet.config.v1.VirtualService", "real_servers") => {
            let rs = || {
                pb::RealServer { address: "198.19.0.2".into(), port: 8080, weight: 1, enabled: true }.encode_to_vec()
            };
            return Value::List(vec![message("duet.config.v1.RealServer", &rs)]);
        }
        ("duet.config.v1.VirtualService", "persistence") => {
            let p = || {
                pb::Persistence {
                    mode: pb::PersistenceMode::SourceAddress as i32,
                    timeout_s: 600,
                    cookie: String::new(),
                }
                .encode_to_vec()
            };
            return message("duet.config.v1.Persistence", &p);
        }
        ("duet.config.v1.RealServer", "address") => return Value::String("198.19.0.2".into()),
        ("duet.config.v1.RealServer", "port") => return Value::U32(8080),
        ("duet.config.v1.RealServer", "weight") => return Value::U32(5),
        ("duet.config.v1.Persistence", "timeout_s") => return Value::U32(600),
        ("duet.config.v1.Persistence", "cookie") => return Value::String("SRV".into()),
        _ => {}
    }
    assert!(!field.is_list() && !field.is_map(), "{msg}.{}: give this test a valid value for it", field.name());
    // A new field of a plain kind: the kind says enough.
    match field.kind() {
        Kind::Bool => Value::Bool(true),
        Kind::Uint32 => Value::U32(1),
        Kind::Uint64 => Value::U64(1),
        Kind::Int32 => Value::I32(1),
        Kind::Int64 => Value::I64(1),
        Kind::String => Value::String("x".into()),
        // The last value: never UNSPECIFIED, never the base's NONE/STANDARD.
        Kind::Enum(e) => Value::EnumNumber(e.values().map(|v| v.number()).max().unwrap_or(1)),
        k => panic!("{msg}.{}: give this test a valid value of kind {k:?}", field.name()),
    }
}

/// The message types the image's content is made of (not its generation,
/// hash or provenance).
fn content_messages(pool: &DescriptorPool) -> Vec<MessageDescriptor> {
    let image = pool.get_message_by_name("duet.config.v1.Image").expect("Image");
    let mut todo: Vec<MessageDescriptor> = image
        .fields()
        .filter(|f| !matches!(f.name(), "generation" | "hash" | "provenance"))
        .filter_map(|f| if let Kind::Message(m) = f.kind() { Some(m) } else { None })
        .collect();
    let mut seen: Vec<MessageDescriptor> = Vec::new();
    while let Some(m) = todo.pop() {
        if seen.iter().any(|s| s.full_name() == m.full_name()) {
            continue;
        }
        todo.extend(m.fields().filter_map(|f| if let Kind::Message(m) = f.kind() { Some(m) } else { None }));
        seen.push(m);
    }
    seen
}

#[test]
fn every_field_of_the_image_content_is_carried() {
    let pool = DescriptorPool::decode(duet_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let subjects = subjects();
    let messages = content_messages(&pool);
    let mut names: Vec<&str> = messages.iter().map(MessageDescriptor::full_name).collect();
    names.sort_unstable();
    assert_eq!(names, subjects.keys().copied().collect::<Vec<_>>(), "a message of the image without a round trip here");
    let mut checked = 0;
    for m in &messages {
        let (trip, base) = &subjects[m.full_name()];
        let base_msg = DynamicMessage::decode(m.clone(), base.as_slice()).expect("base decodes");
        assert!(trip(base).is_ok(), "{}: the base message converts", m.full_name());
        for field in m.fields() {
            let want = value(&pool, m.full_name(), &field);
            assert_ne!(
                *base_msg.get_field(&field),
                want,
                "{}.{}: pick a value other than the base's",
                m.full_name(),
                field.name()
            );
            let mut msg = base_msg.clone();
            msg.set_field(&field, want.clone());
            let back = trip(&msg.encode_to_vec())
                .unwrap_or_else(|p| panic!("{}.{} = {want:?} does not convert: {p:?}", m.full_name(), field.name()));
            let back = DynamicMessage::decode(m.clone(), back.as_slice()).expect("decodes");
            assert_eq!(
                *back.get_field(&field),
                want,
                "{}.{} is not carried by the conversion to the model and back",
                m.full_name(),
                field.name()
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} fields checked");
}
