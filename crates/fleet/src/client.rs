//! One connection to a fleet's etcd and what can be done with it: read a
//! pair's head and images, write a generation (a compare-and-swap on the
//! head), seed a pair, list pairs and units. Every call is bounded by the
//! settings' `op_timeout`.

use std::time::Duration;

use duet_image::change::Change;
use duet_proto::config::v1::{Image, Provenance};
use duet_proto::json::{from_json, to_json};
use duet_witness::TlsPems;
use etcd_client::{Client, Compare, CompareOp, GetOptions, KeyValue, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse};

use crate::keys::Keys;
use crate::record::{Head, UnitRecord};

/// How to reach a fleet's etcd.
#[derive(Debug, Clone)]
pub struct Settings {
    /// etcd members as URLs (`https://host:port`, or `http://`).
    pub endpoints: Vec<String>,
    /// TLS: the CA and, for client authentication, a certificate.
    pub tls: Option<TlsPems>,
    /// The fleet's key prefix (`/duet`).
    pub prefix: String,
    /// Bound on each call to etcd.
    pub op_timeout: Duration,
}

/// The image's full protobuf name, for its JSON.
const IMAGE: &str = "duet.config.v1.Image";

/// What went wrong; each names what to do.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// No member answered, or a call failed or timed out.
    #[error("etcd ({endpoint}) {what}: {detail}")]
    Unavailable { what: &'static str, endpoint: String, detail: String },
    /// No session with etcd: every member failed the last tries.
    #[error("no etcd member answers (the last: {last})")]
    NotConnected { last: String },
    /// etcd's auth refused the call: the user (the client certificate's
    /// common name) has no role on the key.
    #[error(
        "etcd refused {what} ({detail}): this client's certificate (its common name is the etcd user) has no role on \
         the key; grant it the pair's role (see the README's fleet section)"
    )]
    Denied { what: &'static str, detail: String },
    /// The write was based on `base`, but `newer` is the pair's head now:
    /// another writer won.
    #[error(
        "generation {newer} is the pair's head now, and the change was based on generation {base}: another writer \
         committed first; read the image again and re-apply"
    )]
    Overtaken { base: u64, newer: u64 },
    /// The write was based on `base`, a generation the pair never had.
    #[error(
        "the change was based on generation {base}, but the pair's head is generation {head}: read the image again \
         and base the change on the head"
    )]
    AheadOfHead { base: u64, head: u64 },
    /// The change makes an invalid image.
    #[error("{} problem(s): {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<duet_image::Problem>),
    /// The pair has no image in etcd.
    #[error(
        "pair {pair} has no image in etcd (no {key}): its active unit puts its image there when it runs with \
         configsync.store = \"etcd\"; check the pair's name and the fleet's prefix"
    )]
    NoImage { pair: String, key: String },
    /// A key's value is not what duet writes there.
    #[error("{key}: {why}")]
    Damaged { key: String, why: String },
    /// A generation that etcd no longer keeps.
    #[error("generation {generation} of pair {pair} is not kept in etcd (see `config history`)")]
    NoSuchGeneration { pair: String, generation: u64 },
}

impl FleetError {
    fn etcd(what: &'static str, endpoint: &str, e: etcd_client::Error) -> Self {
        if let etcd_client::Error::GRpcStatus(s) = &e
            && s.code() == tonic::Code::PermissionDenied
        {
            return Self::Denied { what, detail: s.message().to_owned() };
        }
        Self::Unavailable { what, endpoint: endpoint.to_owned(), detail: e.to_string() }
    }

    /// Whether etcd could not be reached (a retry may succeed).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::NotConnected { .. })
    }
}

/// A bounded call.
pub(crate) async fn call<T>(
    what: &'static str,
    endpoint: &str,
    timeout: Duration,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, FleetError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(FleetError::etcd(what, endpoint, e)),
        Err(_) => Err(FleetError::Unavailable {
            what,
            endpoint: endpoint.to_owned(),
            detail: format!("no answer within {} ms", timeout.as_millis()),
        }),
    }
}

/// A write that went through.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// The new head, with its image.
    Committed(Image),
    /// The change says what the head says: nothing was written.
    Unchanged(Image),
}

/// A connection to one member of a fleet's etcd.
#[derive(Clone)]
pub struct Fleet {
    client: Client,
    keys: Keys,
    endpoint: String,
    timeout: Duration,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fleet {{ {} {:?} }}", self.endpoint, self.keys)
    }
}

impl Fleet {
    /// Connects to the first member of `s` that answers.
    pub async fn connect(s: &Settings) -> Result<Self, FleetError> {
        let mut last = None;
        for endpoint in &s.endpoints {
            match Self::connect_to(s, endpoint).await {
                Ok(f) => return Ok(f),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(FleetError::Unavailable {
            what: "connect",
            endpoint: String::new(),
            detail: "no endpoint given".into(),
        }))
    }

    /// Connects to `endpoint`.
    pub async fn connect_to(s: &Settings, endpoint: &str) -> Result<Self, FleetError> {
        let opts = duet_witness::connect_options(s.op_timeout, s.tls.as_ref());
        let client = call("connect", endpoint, s.op_timeout, Client::connect([endpoint], Some(opts))).await?;
        Ok(Self { client, keys: Keys::new(&s.prefix), endpoint: endpoint.to_owned(), timeout: s.op_timeout })
    }

    /// The member this talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The underlying client (for the session's lease and watch).
    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn get(
        &self,
        what: &'static str,
        key: String,
        opts: Option<GetOptions>,
    ) -> Result<Vec<KeyValue>, FleetError> {
        let mut c = self.client.clone();
        let r = call(what, &self.endpoint, self.timeout, c.get(key, opts)).await?;
        Ok(r.kvs().to_vec())
    }

    /// The pair's head and the revision it was last written at (`None`:
    /// the pair has no image in etcd).
    pub async fn head(&self, pair: &str) -> Result<Option<(Head, i64)>, FleetError> {
        let key = self.keys.head(pair);
        let kvs = self.get("read the head", key.clone(), None).await?;
        kvs.first().map(|kv| Ok((parse_head(&key, kv.value())?, kv.mod_revision()))).transpose()
    }

    /// Generation `g` of the pair's image, checked against its hash.
    pub async fn image(&self, pair: &str, g: u64) -> Result<Image, FleetError> {
        let key = self.keys.image(pair, g);
        let kvs = self.get("read an image", key.clone(), None).await?;
        let kv = kvs.first().ok_or_else(|| FleetError::NoSuchGeneration { pair: pair.to_owned(), generation: g })?;
        parse_image(&key, kv.value(), g)
    }

    /// The pair's current image (`None`: none in etcd).
    pub async fn current(&self, pair: &str) -> Result<Option<Image>, FleetError> {
        match self.head(pair).await? {
            None => Ok(None),
            Some((h, _)) => {
                let img = self.image(pair, h.generation).await?;
                if img.hash != h.hash {
                    return Err(FleetError::Damaged {
                        key: self.keys.head(pair),
                        why: format!("names hash {} but generation {} has {}", h.hash, h.generation, img.hash),
                    });
                }
                Ok(Some(img))
            }
        }
    }

    /// The pair's current image, or [`FleetError::NoImage`].
    pub async fn require(&self, pair: &str) -> Result<Image, FleetError> {
        self.current(pair)
            .await?
            .ok_or_else(|| FleetError::NoImage { pair: pair.to_owned(), key: self.keys.head(pair) })
    }

    /// Writes `content` as the generation after `base`, if `base` is still
    /// the pair's head: one transaction compares the head's revision with
    /// the one read, puts the image and the head, and drops the generation
    /// `keep` below. Two writers on one base: exactly one wins, the other
    /// gets [`FleetError::Overtaken`] naming the winner's generation.
    pub async fn write(
        &self,
        pair: &str,
        base: u64,
        content: &Image,
        provenance: Provenance,
        keep: u64,
    ) -> Result<Image, FleetError> {
        let head = self.head(pair).await?;
        let current = head.as_ref().map_or(0, |(h, _)| h.generation);
        if base > current {
            return Err(FleetError::AheadOfHead { base, head: current });
        }
        if current != base {
            return Err(FleetError::Overtaken { base, newer: current });
        }
        let key = self.keys.head(pair);
        let guard = match &head {
            Some((_, rev)) => Compare::mod_revision(key.as_str(), CompareOp::Equal, *rev),
            None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
        };
        self.put_generation(pair, guard, base + 1, content, provenance, keep).await
    }

    /// Puts `image` as the pair's first generation in etcd, under its own
    /// number, if the pair has none yet (a pair joining the fleet brings
    /// its image). `Ok(None)`: seeded; `Ok(Some(head))`: the pair already
    /// had an image, which stays.
    pub async fn seed(&self, pair: &str, image: &Image) -> Result<Option<Head>, FleetError> {
        let key = self.keys.head(pair);
        let guard = Compare::create_revision(key.as_str(), CompareOp::Equal, 0);
        let prov = image.provenance.clone().unwrap_or_default();
        match self.put_generation(pair, guard, image.generation.max(1), image, prov, 0).await {
            Ok(_) => Ok(None),
            Err(FleetError::Overtaken { .. }) => Ok(self.head(pair).await?.map(|(h, _)| h)),
            Err(e) => Err(e),
        }
    }

    async fn put_generation(
        &self,
        pair: &str,
        guard: Compare,
        g: u64,
        content: &Image,
        provenance: Provenance,
        keep: u64,
    ) -> Result<Image, FleetError> {
        let img = duet_image::stamped(content, g, provenance);
        let head = Head { generation: g, hash: img.hash.clone() };
        let key = self.keys.head(pair);
        let json = to_json(&img, IMAGE).map_err(|e| FleetError::Damaged { key: key.clone(), why: e.to_string() })?;
        let head_json = serde_json::to_string(&head).unwrap_or_default();
        let mut ops = vec![TxnOp::put(self.keys.image(pair, g), json, None), TxnOp::put(key.as_str(), head_json, None)];
        if keep > 0 && g > keep {
            ops.push(TxnOp::delete(self.keys.image(pair, g - keep), None));
        }
        let txn = Txn::new().when([guard]).and_then(ops).or_else([TxnOp::get(key.as_str(), None)]);
        let mut c = self.client.clone();
        let r = call("write a generation", &self.endpoint, self.timeout, c.txn(txn)).await?;
        if r.succeeded() {
            return Ok(img);
        }
        let newer = r
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(g) => g.kvs().first().and_then(|kv| parse_head(&key, kv.value()).ok()),
                _ => None,
            })
            .map_or(0, |h| h.generation);
        Err(FleetError::Overtaken { base: g - 1, newer })
    }

    /// Applies `change` to the pair's head `base` (the head when `None`)
    /// by the one rule every writer of an image follows
    /// ([`duet_image::change::next`]) and writes it.
    pub async fn apply(
        &self,
        pair: &str,
        base: Option<u64>,
        change: Change,
        provenance: Provenance,
        keep: u64,
    ) -> Result<Written, FleetError> {
        let current = self.require(pair).await?;
        let base = base.unwrap_or(current.generation);
        if base > current.generation {
            return Err(FleetError::AheadOfHead { base, head: current.generation });
        }
        if base != current.generation {
            return Err(FleetError::Overtaken { base, newer: current.generation });
        }
        match duet_image::change::next(&current, change, true).map_err(FleetError::Invalid)? {
            None => Ok(Written::Unchanged(current)),
            Some(next) => self.write(pair, base, &next, provenance, keep).await.map(Written::Committed),
        }
    }

    /// The generations etcd keeps of the pair, oldest first.
    pub async fn history(&self, pair: &str) -> Result<Vec<Image>, FleetError> {
        let opts = GetOptions::new().with_prefix().with_sort(SortTarget::Key, SortOrder::Ascend);
        let kvs = self.get("read the history", self.keys.images(pair), Some(opts)).await?;
        kvs.iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let g = Keys::generation_of(&key).unwrap_or(0);
                parse_image(&key, kv.value(), g)
            })
            .collect()
    }

    /// The pairs that have a head or a unit in the fleet, sorted.
    pub async fn pairs(&self) -> Result<Vec<String>, FleetError> {
        let opts = GetOptions::new().with_prefix().with_keys_only();
        let kvs = self.get("list the pairs", self.keys.pairs(), Some(opts)).await?;
        let mut pairs: Vec<String> = kvs
            .iter()
            .filter_map(|kv| self.keys.pair_of(&String::from_utf8_lossy(kv.key())).map(str::to_owned))
            .collect();
        pairs.dedup();
        Ok(pairs)
    }

    /// The status of the pair's units that are up (their keys live as long
    /// as their lease), sorted by name. A value that does not read is
    /// reported as a unit whose role says so.
    pub async fn units(&self, pair: &str) -> Result<Vec<UnitRecord>, FleetError> {
        let opts = GetOptions::new().with_prefix().with_sort(SortTarget::Key, SortOrder::Ascend);
        let kvs = self.get("read the units", self.keys.units(pair), Some(opts)).await?;
        Ok(kvs
            .iter()
            .map(|kv| {
                serde_json::from_slice(kv.value()).unwrap_or_else(|e| UnitRecord {
                    unit: String::from_utf8_lossy(kv.key()).rsplit('/').next().unwrap_or("").to_owned(),
                    pair: pair.to_owned(),
                    role: format!("unreadable status: {e}"),
                    ..UnitRecord::default()
                })
            })
            .collect())
    }

    /// The value of any key (the witness's, for the fleet's status).
    pub async fn value(&self, key: &str) -> Result<Option<String>, FleetError> {
        let kvs = self.get("read a key", key.to_owned(), None).await?;
        Ok(kvs.first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }
}

fn parse_head(key: &str, v: &[u8]) -> Result<Head, FleetError> {
    serde_json::from_slice(v).map_err(|e| FleetError::Damaged {
        key: key.to_owned(),
        why: format!("not a head ({{\"generation\":N,\"hash\":\"…\"}}): {e}"),
    })
}

fn parse_image(key: &str, v: &[u8], g: u64) -> Result<Image, FleetError> {
    let damaged = |why: String| FleetError::Damaged { key: key.to_owned(), why };
    let text = std::str::from_utf8(v).map_err(|e| damaged(format!("not UTF-8: {e}")))?;
    let img: Image = from_json(text, IMAGE).map_err(|e| damaged(format!("not an image: {e}")))?;
    if img.generation != g {
        return Err(damaged(format!("holds generation {}", img.generation)));
    }
    if !duet_image::hash_ok(&img) {
        return Err(damaged("does not match its hash (changed by hand?)".into()));
    }
    Ok(img)
}
