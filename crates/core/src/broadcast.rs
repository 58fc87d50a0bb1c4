//! Application broadcasts carried by foca: member meta (name + tags), leave intents,
//! operator force-leaves, user events and queries; and the foca [`BroadcastHandler`] that feeds
//! them to the member table, the user-event buffer and the query buffer.
//!
//! A meta too large for one datagram (tags may take up to [`MAX_TAGS_LEN`] bytes, more than
//! foca's per-packet budget) travels as a small [`Broadcast::MetaChanged`] instead: receivers
//! that hold an older meta of that member push-pull with it ([`Shared::fetch`]) and get the
//! whole meta from its state.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use foca::{BroadcastHandler, Invalidates};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::debug;

use crate::accusation::{Accusation, Accusations};
use crate::identity::Identity;
use crate::membership::{Membership, Meta};
use crate::query::{Queries, Query, QueryError, validate as validate_query};
use crate::user_event::{UserEvent, UserEventError, UserEvents, validate as validate_user_event};

/// Longest node name accepted, in bytes (Serf's limit).
pub const MAX_NAME_LEN: usize = 128;
/// Longest tag key accepted, in bytes.
pub const MAX_TAG_KEY_LEN: usize = 128;
/// Largest total size of a member's tags (keys + values), in bytes. Serf allows 512; shoal
/// carries larger sets by push-pull (see the module docs).
pub const MAX_TAGS_LEN: usize = 4096;

/// One custom broadcast item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Broadcast {
    /// A member's current name and tags.
    Meta(Meta),
    /// The member is about to leave gracefully.
    Leave(Identity),
    /// An operator declared this failed member gone (`shoal force-leave`).
    ForceLeave(Identity),
    /// The member's meta is now at this version but too large to gossip: fetch it by
    /// push-pull from the member.
    MetaChanged {
        /// Whose meta changed.
        id: Identity,
        /// Its new version.
        version: u64,
    },
    /// A user event (`shoal event`).
    User(UserEvent),
    /// A query (`shoal query`).
    Query(Query),
    /// A member's own probe of another failed: a confirmation for the others' suspicions of
    /// it ([`crate::accusation`]).
    Suspect(Accusation),
}

impl Broadcast {
    /// Serialises the item (postcard).
    pub fn encode(&self) -> Result<Vec<u8>, BroadcastError> {
        postcard::to_stdvec(self).map_err(BroadcastError::Encode)
    }
}

/// Why a broadcast item was refused. The table is unchanged.
#[derive(Debug, Error)]
pub enum BroadcastError {
    /// Not a valid postcard `Broadcast`.
    #[error("undecodable broadcast item: {0}")]
    Decode(postcard::Error),
    /// Could not be serialised.
    #[error("cannot encode broadcast item: {0}")]
    Encode(postcard::Error),
    /// A meta over the size limits.
    #[error("{0}")]
    Invalid(#[from] MetaError),
    /// A user event over the size limits.
    #[error("{0}")]
    UserEvent(#[from] UserEventError),
    /// A query over the limits.
    #[error("{0}")]
    Query(#[from] QueryError),
}

/// A name or tag set that breaks the rules: the safe character sets or the limits.
///
/// Names and tag keys end up in shell environments, config files rendered from templates,
/// log lines and terminal tables, so they are held to a DNS-label-like set (ASCII letters,
/// digits, `-`, `_`, `.`); tag values may hold anything printable, never a control character
/// (a newline in a value could add a line to a rendered HAProxy config). Values are quoted
/// with `{:?}` here, so the error itself is one safe line.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MetaError {
    /// Empty node name.
    #[error("node name is empty")]
    EmptyName,
    /// Node name too long.
    #[error("node name is {0} bytes; the limit is {MAX_NAME_LEN}")]
    NameTooLong(usize),
    /// A character outside the safe set in the node name.
    #[error(
        "node name {name:?} has {bad:?}: only ASCII letters, digits, '-', '_' and '.' are allowed"
    )]
    UnsafeName {
        /// The name as given.
        name: String,
        /// The first character refused.
        bad: char,
    },
    /// Empty tag key.
    #[error("a tag key is empty")]
    EmptyTagKey,
    /// Tag key too long.
    #[error("tag key {key:?} is {len} bytes; the limit is {MAX_TAG_KEY_LEN}", len = .key.len())]
    TagKeyTooLong {
        /// The key.
        key: String,
    },
    /// A character outside the safe set in a tag key.
    #[error(
        "tag key {key:?} has {bad:?}: only ASCII letters, digits, '-', '_' and '.' are allowed"
    )]
    UnsafeTagKey {
        /// The key as given.
        key: String,
        /// The first character refused.
        bad: char,
    },
    /// A control character (or a Unicode line or paragraph separator) in a tag value.
    #[error("tag {key}'s value {value:?} has the control character {bad:?}")]
    UnsafeTagValue {
        /// The tag's key.
        key: String,
        /// The value as given.
        value: String,
        /// The first character refused.
        bad: char,
    },
    /// Tags too large.
    #[error("tags take {0} bytes; the limit is {MAX_TAGS_LEN}")]
    TagsTooLarge(usize),
    /// The health checks or the group break the rules ([`crate::role::validate_role`]).
    #[error("{0}")]
    Role(#[from] crate::role::RoleError),
}

/// Whether `c` may appear in a node name or a tag key.
fn safe_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Whether `c` breaks a line or controls a terminal: refused in tag values.
fn control_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Checks a node name: 1 to [`MAX_NAME_LEN`] bytes of ASCII letters, digits, `-`, `_`, `.`.
pub fn validate_name(name: &str) -> Result<(), MetaError> {
    if name.is_empty() {
        return Err(MetaError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(MetaError::NameTooLong(name.len()));
    }
    match name.chars().find(|c| !safe_name_char(*c)) {
        Some(bad) => Err(MetaError::UnsafeName {
            name: name.to_string(),
            bad,
        }),
        None => Ok(()),
    }
}

/// Checks one tag: the key as a name (up to [`MAX_TAG_KEY_LEN`] bytes), the value free of
/// control characters.
pub fn validate_tag(key: &str, value: &str) -> Result<(), MetaError> {
    if key.is_empty() {
        return Err(MetaError::EmptyTagKey);
    }
    if key.len() > MAX_TAG_KEY_LEN {
        return Err(MetaError::TagKeyTooLong {
            key: key.to_string(),
        });
    }
    if let Some(bad) = key.chars().find(|c| !safe_name_char(*c)) {
        return Err(MetaError::UnsafeTagKey {
            key: key.to_string(),
            bad,
        });
    }
    match value.chars().find(|c| control_char(*c)) {
        Some(bad) => Err(MetaError::UnsafeTagValue {
            key: key.to_string(),
            value: value.to_string(),
            bad,
        }),
        None => Ok(()),
    }
}

/// Checks a tag set: every tag ([`validate_tag`]) and the total size.
pub fn validate_tags<'a>(
    tags: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), MetaError> {
    let mut size = 0usize;
    for (k, v) in tags {
        validate_tag(k, v)?;
        size += k.len() + v.len();
    }
    if size > MAX_TAGS_LEN {
        return Err(MetaError::TagsTooLarge(size));
    }
    Ok(())
}

/// Checks a meta against the rules: its name ([`validate_name`]) and tags
/// ([`validate_tags`]). A meta from the network that fails is dropped and counted, so a
/// member with an unsafe name is never listed, never handed to a handler or a template.
pub fn validate_meta(meta: &Meta) -> Result<(), MetaError> {
    validate_name(&meta.name)?;
    validate_tags(&meta.tags)?;
    Ok(crate::role::validate_role(&meta.role)?)
}

/// What makes a newer broadcast replace an older one in foca's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BroadcastKey {
    /// Meta of `addr`, ordered by `(generation, version)`.
    Meta(SocketAddr, (u64, u64)),
    /// Leave intent (own or forced) of `addr` at `generation`.
    Leave(SocketAddr, u64),
    /// A user event: `(ltime, name, payload)`, which is what makes two events the same.
    User(u64, String, Vec<u8>),
    /// A query: `(ltime, id)`.
    Query(u64, u64),
    /// An accusation of the member at the first address by the one at the second, at
    /// `(generation, incarnation)` of the accused.
    Suspect(SocketAddr, SocketAddr, (u64, u16)),
}

impl Invalidates for BroadcastKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (BroadcastKey::Meta(a, x), BroadcastKey::Meta(b, y)) => a == b && x >= y,
            (BroadcastKey::Leave(a, x), BroadcastKey::Leave(b, y)) => a == b && x >= y,
            (a @ BroadcastKey::User(..), b @ BroadcastKey::User(..)) => a == b,
            (a @ BroadcastKey::Query(..), b @ BroadcastKey::Query(..)) => a == b,
            (BroadcastKey::Suspect(t, a, x), BroadcastKey::Suspect(u, b, y)) => {
                t == u && a == b && x >= y
            }
            _ => false,
        }
    }
}

/// State shared between the node's owner task and foca's broadcast handler.
///
/// foca owns its handler and offers no accessor, so the table sits behind a mutex that only the
/// owner task ever locks (the handler runs inside the owner's foca calls, and the owner never
/// holds the lock across one): it is never contended.
#[derive(Debug)]
pub struct Shared {
    /// The member table.
    pub table: Membership,
    /// The event clock and the recent user events.
    pub events: UserEvents,
    /// The query clock and the ids of recent queries.
    pub queries: Queries,
    /// Set when a received item was news, so the owner forwards it at once.
    pub news: bool,
    /// Accusations heard (ours included): how many members confirm a suspicion.
    pub accusations: Accusations,
    /// Members newly accused since the engine last looked (it shortens its own suspicions of
    /// them).
    pub accused: Vec<Identity>,
    /// Members whose newer meta was announced but not carried ([`Broadcast::MetaChanged`]):
    /// the owner push-pulls with each, then clears this.
    pub fetch: Vec<SocketAddr>,
    /// Set by the engine while foca reads a datagram from a sender that may speak only for
    /// itself (not yet a member with a meta, nor a join contact): its items about itself (its
    /// meta, its own leave) are taken, anything else it carries is skipped.
    pub only_about: Option<SocketAddr>,
    /// Whether a leave intent may be relayed: true only in a sealed cluster that takes no
    /// plaintext (every sender holds the key). Otherwise a gossiped intent counts only from
    /// the member itself (the datagram's sender, whose header names its UDP source), a
    /// force-leave only about a member this node does not see up, and neither is gossiped on.
    pub relayed_leaves: bool,
}

impl Shared {
    /// The shared state around `table`, `events` and `queries`.
    pub fn new(table: Membership, events: UserEvents, queries: Queries) -> Self {
        Self {
            table,
            events,
            queries,
            news: false,
            accusations: Accusations::default(),
            accused: Vec::new(),
            fetch: Vec::new(),
            only_about: None,
            relayed_leaves: false,
        }
    }
}

impl Broadcast {
    /// True when the item is the member at `addr`'s own news: its meta, the announcement of
    /// a newer one, its own leave, or its own accusation of another. (A force-leave, a user
    /// event or a query is never.)
    fn is_about(&self, addr: SocketAddr) -> bool {
        match self {
            Broadcast::Meta(meta) => meta.id.addr == addr,
            Broadcast::MetaChanged { id, .. } | Broadcast::Leave(id) => id.addr == addr,
            Broadcast::Suspect(a) => a.accuser.addr == addr,
            Broadcast::ForceLeave(_) | Broadcast::User(_) | Broadcast::Query(_) => false,
        }
    }
}

/// Locks the shared state. Poisoning means the owner panicked mid-update; the table is then
/// still structurally valid, so carry on with it.
pub fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// foca's custom-broadcast handler: decodes items and applies them to the table.
pub struct ItemHandler {
    shared: Arc<Mutex<Shared>>,
}

impl ItemHandler {
    /// A handler feeding `shared`.
    pub fn new(shared: Arc<Mutex<Shared>>) -> Self {
        Self { shared }
    }
}

impl BroadcastHandler<Identity> for ItemHandler {
    type Key = BroadcastKey;
    type Error = BroadcastError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&Identity>,
    ) -> Result<Option<Self::Key>, Self::Error> {
        let item: Broadcast = postcard::from_bytes(data).map_err(BroadcastError::Decode)?;
        let mut shared = lock(&self.shared);
        if let Some(sender) = shared.only_about
            && !item.is_about(sender)
        {
            // A sender that may speak only for itself relayed someone else's item: skipped
            // (not an error: the rest of its datagram still counts).
            return Ok(None);
        }
        let (key, news) = match item {
            Broadcast::Meta(meta) => {
                validate_meta(&meta)?;
                let addr = meta.id.addr;
                let key = BroadcastKey::Meta(addr, (meta.id.generation, meta.version));
                let news = shared.table.apply_meta(meta);
                if shared.only_about == Some(addr) && shared.table.has_meta(addr) {
                    // Its own meta: foca already took the sender as a member (the header
                    // comes first), so it is now a member with a meta, which may speak for
                    // others: the rest of its datagram counts (see `engine/senders.rs`).
                    shared.only_about = None;
                }
                (key, news)
            }
            Broadcast::Leave(id) | Broadcast::ForceLeave(id)
                if sender.is_some() && !shared.relayed_leaves =>
            {
                // Plaintext: nobody speaks for a member's leave but the member itself, and an
                // insider's force-leave never touches a member that is up here. Taken items
                // are not gossiped on: no receiver would take them from us.
                let forced = matches!(item, Broadcast::ForceLeave(_));
                let own = sender.is_some_and(|s| s.addr == id.addr) && !forced;
                if own || (forced && !shared.table.is_up(id.addr)) {
                    shared.table.apply_intent(id, forced);
                } else {
                    debug!(about = %id.addr, forced, "skipped a relayed leave intent (plaintext: only the member itself)");
                }
                return Ok(None);
            }
            Broadcast::Leave(id) => (
                BroadcastKey::Leave(id.addr, id.generation),
                shared.table.apply_intent(id, false),
            ),
            Broadcast::ForceLeave(id) => (
                BroadcastKey::Leave(id.addr, id.generation),
                shared.table.apply_intent(id, true),
            ),
            Broadcast::MetaChanged { id, version } => {
                let news = shared.table.announce_meta(id, version);
                if news && sender.is_some() {
                    shared.fetch.push(id.addr);
                }
                (BroadcastKey::Meta(id.addr, (id.generation, version)), news)
            }
            Broadcast::User(event) => {
                validate_user_event(&event.name, &event.payload)?;
                let key =
                    BroadcastKey::User(event.ltime, event.name.clone(), event.payload.clone());
                (key, shared.events.receive(event))
            }
            Broadcast::Query(query) => {
                validate_query(&query)?;
                let key = BroadcastKey::Query(query.ltime, query.id);
                (key, shared.queries.receive(query))
            }
            Broadcast::Suspect(a) => {
                let key = BroadcastKey::Suspect(
                    a.target.addr,
                    a.accuser.addr,
                    (a.target.generation, a.incarnation),
                );
                let news = shared.accusations.record(a);
                if news {
                    shared.accused.push(a.target);
                }
                // Counted, and gossiped on, but not news to forward at once: the member's
                // suspicion itself travels with foca's updates.
                if sender.is_none() {
                    return Ok(Some(key));
                }
                return Ok(news.then_some(key));
            }
        };
        // Our own items (no sender) are always queued; received ones only when they were news,
        // so a known item is never re-gossiped forever.
        if sender.is_none() {
            return Ok(Some(key));
        }
        shared.news |= news;
        Ok(news.then_some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A member table for the local member `own`, and an item handler feeding it.
    fn handler_for(own: Meta) -> (Arc<Mutex<Shared>>, ItemHandler) {
        let table = Membership::new(
            own,
            std::time::Duration::from_secs(60),
            std::time::Duration::from_secs(60),
        );
        let shared = Arc::new(Mutex::new(Shared::new(
            table,
            UserEvents::restored(None),
            Queries::restored(None),
        )));
        let handler = ItemHandler::new(shared.clone());
        (shared, handler)
    }

    #[test]
    fn newer_meta_key_invalidates_older_of_the_same_member_only() {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        assert!(BroadcastKey::Meta(a, (1, 2)).invalidates(&BroadcastKey::Meta(a, (1, 1))));
        assert!(!BroadcastKey::Meta(a, (1, 1)).invalidates(&BroadcastKey::Meta(a, (1, 2))));
        assert!(!BroadcastKey::Meta(a, (1, 2)).invalidates(&BroadcastKey::Meta(b, (1, 1))));
        assert!(!BroadcastKey::Leave(a, 1).invalidates(&BroadcastKey::Meta(a, (1, 1))));
    }

    #[test]
    fn oversized_tags_are_refused() {
        let meta = Meta {
            id: Identity::new("127.0.0.1:1".parse().expect("addr")),
            version: 0,
            name: "n".into(),
            tags: BTreeMap::from([("k".into(), "v".repeat(MAX_TAGS_LEN))]),
            role: Default::default(),
        };
        let err = validate_meta(&meta).expect_err("over the limit");
        assert_eq!(err, MetaError::TagsTooLarge(MAX_TAGS_LEN + 1));
        assert_eq!(err.to_string(), "tags take 4097 bytes; the limit is 4096");
    }

    /// Issue 10: a gossiped meta with an unsafe name is an error for foca (the packet is
    /// dropped and counted) and changes nothing in the table.
    #[test]
    fn a_gossiped_meta_with_an_unsafe_name_is_refused_and_not_applied() {
        let own = Meta {
            id: Identity::new("127.0.0.1:1".parse().expect("addr")),
            version: 0,
            name: "a".into(),
            tags: BTreeMap::new(),
            role: Default::default(),
        };
        let (shared, mut handler) = handler_for(own);
        let sender = Identity::new("127.0.0.1:2".parse().expect("addr"));
        let item = Broadcast::Meta(Meta {
            id: sender,
            version: 1,
            name: "web-9\n    server evil 6.6.6.6:80 check\n#".into(),
            tags: BTreeMap::new(),
            role: Default::default(),
        })
        .encode()
        .expect("encode");
        let result = handler.receive_item(&item, Some(&sender));
        assert!(
            matches!(
                result,
                Err(BroadcastError::Invalid(MetaError::UnsafeName { .. }))
            ),
            "{result:?}"
        );
        assert_eq!(lock(&shared).table.metas().len(), 1);
    }

    /// Issue 10: the README's HAProxy template attack, a name with a newline and a config line.
    #[test]
    fn names_and_tag_keys_outside_the_safe_set_are_refused_and_quoted_in_the_error() {
        for good in ["web-1", "db_2.east", "A", &"n".repeat(MAX_NAME_LEN)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        let attack = "web-9\n    server evil 6.6.6.6:80 check\n#";
        let err = validate_name(attack).expect_err("newline");
        assert_eq!(
            err.to_string(),
            r#"node name "web-9\n    server evil 6.6.6.6:80 check\n#" has '\n': only ASCII letters, digits, '-', '_' and '.' are allowed"#
        );
        assert!(!err.to_string().contains('\n'));
        for bad in ["a b", "a/b", "tab\t", "nul\0", "é", "a:b", "a\u{1b}[31m"] {
            assert!(
                matches!(validate_name(bad), Err(MetaError::UnsafeName { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(validate_name(""), Err(MetaError::EmptyName));
        assert_eq!(
            validate_name(&"n".repeat(MAX_NAME_LEN + 1)),
            Err(MetaError::NameTooLong(MAX_NAME_LEN + 1))
        );
        assert!(matches!(
            validate_tag("http port", "80"),
            Err(MetaError::UnsafeTagKey { bad: ' ', .. })
        ));
        assert!(matches!(
            validate_tag(&"k".repeat(MAX_TAG_KEY_LEN + 1), "v"),
            Err(MetaError::TagKeyTooLong { .. })
        ));
        assert_eq!(validate_tag("", "v"), Err(MetaError::EmptyTagKey));
    }

    #[test]
    fn tag_values_may_hold_anything_printable_but_no_control_character() {
        for good in [
            "",
            "80",
            "a b=c,d",
            "üñï €",
            "{\"json\": [1]}",
            "'quoted' \"too\"",
        ] {
            assert_eq!(validate_tag("k", good), Ok(()), "{good}");
        }
        for bad in [
            "80\n    server evil",
            "a\rb",
            "\t",
            "\u{7f}",
            "\u{85}",
            "\u{2028}",
            "\u{1b}[2J",
        ] {
            assert!(
                matches!(
                    validate_tag("k", bad),
                    Err(MetaError::UnsafeTagValue { .. })
                ),
                "{bad:?}"
            );
        }
        let meta = Meta {
            id: Identity::new("127.0.0.1:1".parse().expect("addr")),
            version: 0,
            name: "n".into(),
            tags: BTreeMap::from([("http_port".into(), "80\n    server evil".into())]),
            role: Default::default(),
        };
        let err = validate_meta(&meta).expect_err("newline in a value");
        assert_eq!(
            err.to_string(),
            r#"tag http_port's value "80\n    server evil" has the control character '\n'"#
        );
    }

    /// Issue 10 with issue 8's join speed: a sender that may speak only for itself (a
    /// newcomer not yet known with a meta) delivers its own meta, so it is listed at once; the
    /// other members' metas, leaves and events it relays are skipped without an error.
    #[test]
    fn a_sender_that_speaks_only_for_itself_delivers_its_own_meta_and_nothing_else() {
        let meta = |port: u16, name: &str| Meta {
            id: Identity::new(SocketAddr::from(([127, 0, 0, 1], port))),
            version: 0,
            name: name.into(),
            tags: BTreeMap::new(),
            role: Default::default(),
        };
        let (shared, mut handler) = handler_for(meta(1, "a"));
        let newcomer = meta(2, "b");
        lock(&shared).only_about = Some(newcomer.id.addr);
        let other = Broadcast::Meta(meta(3, "c")).encode().expect("encode");
        assert!(matches!(
            handler.receive_item(&other, Some(&newcomer.id)),
            Ok(None)
        ));
        let leave = Broadcast::Leave(meta(3, "c").id).encode().expect("encode");
        assert!(matches!(
            handler.receive_item(&leave, Some(&newcomer.id)),
            Ok(None)
        ));
        let own = Broadcast::Meta(newcomer.clone()).encode().expect("encode");
        assert!(matches!(
            handler.receive_item(&own, Some(&newcomer.id)),
            Ok(Some(_))
        ));
        let names: Vec<String> = lock(&shared)
            .table
            .metas()
            .iter()
            .map(|m| m.name.clone())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.contains(&"b".to_string()) && !names.contains(&"c".to_string()));
        // Once trusted, the same relayed meta is taken.
        lock(&shared).only_about = None;
        assert!(matches!(
            handler.receive_item(&other, Some(&newcomer.id)),
            Ok(Some(_))
        ));
    }
}
