//! The pure membership table: foca notifications and application broadcasts in, events out.
//!
//! No sockets, no clocks, no tokio: every input carries the `Instant` it happened at, so the
//! rules are unit-tested by feeding inputs. The driver ([`crate::node`]) owns one `Membership`.
//!
//! Rules, in Serf's words:
//! - a member joins (`member-join`) once foca says it is up *and* its name and tags are known;
//! - foca's "down" becomes `member-leave` when the member announced a leave intent first, else
//!   `member-failed`; an intent that arrives after the down notice turns `failed` into `left`
//!   and runs `member-leave` (the notices crossed);
//! - a newer tag version of a joined member is a `member-update`;
//! - failed members are reaped after `reconnect_timeout`, left ones after `tombstone_timeout`
//!   (`member-reap`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::fnv::{AddrHash, Fnv};
use crate::identity::Identity;
use crate::query::Query;
use crate::role::Role;
use crate::user_event::UserEvent;
use digest::{Sums, addr_hashes};

mod digest;
mod reap;

/// A member's name and tags, versioned; travels as a custom broadcast and in push-pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Whose meta this is.
    pub id: Identity,
    /// Bumped on every change by the member itself; `(id.generation, version)` orders metas.
    pub version: u64,
    /// The member's node name.
    pub name: String,
    /// The member's tags.
    pub tags: BTreeMap<String, String>,
    /// The member's health checks and primary group.
    pub role: Role,
}

impl Meta {
    fn order(&self) -> (u64, u64) {
        (self.id.generation, self.version)
    }
}

/// A member's status, as `shoal members` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Answering probes.
    Alive,
    /// Missed a probe; declared failed unless it refutes in time.
    Suspect,
    /// Announced that it is leaving; not yet gone.
    Leaving,
    /// Left gracefully.
    Left,
    /// Stopped answering without leaving.
    Failed,
}

impl Status {
    /// The lowercase word Serf uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Suspect => "suspect",
            Status::Leaving => "leaving",
            Status::Left => "left",
            Status::Failed => "failed",
        }
    }
}

/// One member as the rest of the program sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node name.
    pub name: String,
    /// Gossip address.
    pub addr: SocketAddr,
    /// The identity generation this row describes.
    pub generation: u64,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Health checks and primary group, as the member announced them.
    pub role: Role,
    /// Status.
    pub status: Status,
}

/// The kind of a member event, with Serf's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberEventKind {
    /// `member-join`
    Join,
    /// `member-leave`
    Leave,
    /// `member-failed`
    Failed,
    /// `member-update`
    Update,
    /// `member-reap`
    Reap,
}

impl MemberEventKind {
    /// Serf's event name, as in `SERF_EVENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberEventKind::Join => "member-join",
            MemberEventKind::Leave => "member-leave",
            MemberEventKind::Failed => "member-failed",
            MemberEventKind::Update => "member-update",
            MemberEventKind::Reap => "member-reap",
        }
    }
}

/// Something handlers may react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member changed.
    Member {
        /// What happened.
        kind: MemberEventKind,
        /// The member, as it is after the change.
        member: Member,
    },
    /// A user event arrived for the first time (`user`, `user:NAME` handlers).
    User(UserEvent),
    /// A query this member passes the filters of arrived for the first time (`query`,
    /// `query:NAME` handlers); answer with [`crate::NodeHandle::respond_query`].
    Query(Query),
}

#[derive(Debug, Clone)]
struct Entry {
    id: Identity,
    meta: Option<Meta>,
    /// foca has told us about this identity (up or down).
    known: bool,
    /// foca counts it active.
    up: bool,
    suspect: bool,
    /// Generation of the latest leave intent (own or forced) seen for this address.
    intent_gen: Option<u64>,
    /// That intent was an operator's force-leave, not the member's own.
    forced: bool,
    /// That intent was heard from a peer, not the member (see [`Self::apply_heard_intent`]).
    heard: bool,
    /// Handlers were told it joined and not told it went away since.
    joined: bool,
    /// Handlers were told it failed (so a late intent must still tell them it left).
    told_failed: bool,
    /// When it went down.
    down_since: Option<Instant>,
    /// The newest `(generation, version)` of its meta announced without the meta itself (too
    /// large to gossip); `meta` is current once it reaches this.
    announced: Option<(u64, u64)>,
    /// The digest's hash states after the address text, and after `left` and the address
    /// text: an entry never changes address, so they are computed once (formatting the
    /// address for every digest was a third of a thousand-node simulation's time).
    addr_hash: (Fnv, Fnv),
}

impl Entry {
    fn new(id: Identity) -> Self {
        Self {
            id,
            meta: None,
            known: false,
            up: false,
            suspect: false,
            intent_gen: None,
            forced: false,
            heard: false,
            joined: false,
            told_failed: false,
            down_since: None,
            announced: None,
            addr_hash: addr_hashes(id.addr),
        }
    }

    /// A leave intent exists for the current generation.
    fn intent(&self) -> bool {
        self.intent_gen == Some(self.id.generation)
    }

    fn status(&self) -> Status {
        match (self.up, self.intent() && !self.forced, self.suspect) {
            (true, true, _) => Status::Leaving,
            (true, false, true) => Status::Suspect,
            (true, false, false) => Status::Alive,
            (false, ..) if self.intent() => Status::Left,
            (false, ..) => Status::Failed,
        }
    }

    fn member(&self) -> Member {
        let (name, tags, role) = match &self.meta {
            Some(meta) if meta.id.generation < self.id.generation => {
                (meta.name.clone(), meta.tags.clone(), meta.role.restarted())
            }
            Some(meta) => (meta.name.clone(), meta.tags.clone(), meta.role.clone()),
            None => (self.id.addr.to_string(), BTreeMap::new(), Role::default()),
        };
        Member {
            name,
            addr: self.id.addr,
            generation: self.id.generation,
            tags,
            role,
            status: self.status(),
        }
    }
}

/// The member table. See the module docs for the rules.
#[derive(Debug)]
pub struct Membership {
    local: SocketAddr,
    entries: BTreeMap<SocketAddr, Entry>,
    /// The order (generation, version) of each entry's meta, for the entries that have one:
    /// "is this meta news?" and "has it a meta?" asked without walking the tree (at a thousand
    /// members, for every meta every datagram carries: 15% of a simulation's time).
    meta_orders: HashMap<SocketAddr, (u64, u64), AddrHash>,
    /// How many entries hold an announced meta not carried yet (usually none).
    announced: usize,
    events: Vec<Event>,
    changed: bool,
    /// Counts every change, for callers that cache what they derive from the table.
    revision: u64,
    /// The digest and the count of named down entries, kept up to date on every change.
    sums: Sums,
    /// `(epoch, when)`: while the entries stand still, nothing expires before `when`
    /// (`None`: never).
    reap_due: Option<(u64, Option<Instant>)>,
    reconnect_timeout: Duration,
    tombstone_timeout: Duration,
}

impl Membership {
    /// A table holding only the local member, which "joins" at once (Serf runs `member-join`
    /// for the local node too).
    pub fn new(local: Meta, reconnect_timeout: Duration, tombstone_timeout: Duration) -> Self {
        let addr = local.id.addr;
        let mut entry = Entry::new(local.id);
        let mut meta_orders = HashMap::with_hasher(AddrHash::new());
        meta_orders.insert(addr, local.order());
        entry.meta = Some(local);
        entry.known = true;
        entry.up = true;
        let mut table = Self {
            local: addr,
            entries: BTreeMap::from([(addr, entry)]),
            meta_orders,
            announced: 0,
            events: Vec::new(),
            changed: true,
            revision: 0,
            sums: Sums::default(),
            reap_due: None,
            reconnect_timeout,
            tombstone_timeout,
        };
        table.sums = table.recount();
        table.try_join(addr);
        table
    }

    /// The local member's current meta.
    pub fn local_meta(&self) -> &Meta {
        self.entries[&self.local]
            .meta
            .as_ref()
            .expect("the local entry is created with its meta and never loses it")
    }

    /// Replaces the local name/tags, bumping the version. Returns the meta to broadcast.
    pub fn set_local_tags(&mut self, tags: BTreeMap<String, String>) -> Meta {
        let mut meta = self.local_meta().clone();
        meta.version += 1;
        meta.tags = tags;
        self.apply_meta(meta.clone());
        meta
    }

    /// Replaces the local health and group, bumping the version. Returns the meta to
    /// broadcast.
    pub fn set_local_role(&mut self, role: Role) -> Meta {
        let mut meta = self.local_meta().clone();
        meta.version += 1;
        meta.role = role;
        self.apply_meta(meta.clone());
        meta
    }

    /// The local identity changed (foca renewed it after being declared down). Returns the meta
    /// to broadcast under the new identity.
    pub fn renew_local(&mut self, id: Identity) -> Meta {
        self.tracked(self.local, |t| t.renew_local_(id))
    }

    fn renew_local_(&mut self, id: Identity) -> Meta {
        let mut meta = self.local_meta().clone();
        meta.id = id;
        meta.version = 0;
        if let Some(entry) = self.entries.get_mut(&self.local) {
            entry.id = id;
            entry.meta = Some(meta.clone());
            entry.intent_gen = None;
            self.meta_orders.insert(self.local, meta.order());
        }
        self.touch();
        meta
    }

    /// Marks the local member as leaving (its intent is on its way).
    pub fn set_local_leaving(&mut self) {
        self.tracked(self.local, |t| t.set_local_leaving_())
    }

    fn set_local_leaving_(&mut self) {
        if let Some(entry) = self.entries.get_mut(&self.local) {
            entry.intent_gen = Some(entry.id.generation);
            self.touch();
        }
    }

    /// The entry for a foca notice about `id`: created if new, moved to `id`'s generation if
    /// that is newer (foca already decided it wins), `None` for news about an older one.
    /// `up` is left alone: only foca's up/down notices change it (a live member that restarts
    /// fast gets only `Rename`, and stays up).
    fn entry_for(entries: &mut BTreeMap<SocketAddr, Entry>, id: Identity) -> Option<&mut Entry> {
        let entry = entries.entry(id.addr).or_insert_with(|| Entry::new(id));
        if !entry.known {
            entry.id = id;
        } else if id.generation < entry.id.generation {
            return None;
        } else if id.generation > entry.id.generation {
            entry.id = id;
            entry.suspect = false;
            entry.told_failed = false;
        }
        Some(entry)
    }

    /// foca: `MemberUp`.
    pub fn member_up(&mut self, id: Identity) {
        self.tracked(id.addr, |t| t.member_up_(id))
    }

    fn member_up_(&mut self, id: Identity) {
        if id.addr == self.local {
            return;
        }
        let Some(entry) = Self::entry_for(&mut self.entries, id) else {
            return;
        };
        entry.known = true;
        entry.up = true;
        entry.down_since = None;
        if std::mem::take(&mut entry.heard) {
            // A peer said it left, yet it is up: the peer was wrong (or lying).
            entry.intent_gen = None;
        }
        self.touch();
        self.try_join(id.addr);
    }

    /// foca: `MemberDown`.
    pub fn member_down(&mut self, id: Identity, now: Instant) {
        self.tracked(id.addr, |t| t.member_down_(id, now))
    }

    fn member_down_(&mut self, id: Identity, now: Instant) {
        if id.addr == self.local {
            return;
        }
        let Some(entry) = Self::entry_for(&mut self.entries, id) else {
            return;
        };
        entry.known = true;
        if !entry.up && entry.down_since.is_some() {
            return;
        }
        entry.up = false;
        entry.suspect = false;
        entry.down_since = Some(now);
        self.changed = true;
        self.revision += 1;
        if entry.joined {
            entry.joined = false;
            let kind = if entry.intent() {
                MemberEventKind::Leave
            } else {
                entry.told_failed = true;
                MemberEventKind::Failed
            };
            let member = entry.member();
            self.events.push(Event::Member { kind, member });
        }
    }

    /// foca: `Rename(old, new)`: the member at that address came back with a new identity.
    pub fn rename(&mut self, _old: Identity, new: Identity) {
        self.tracked(new.addr, |t| t.rename_(new))
    }

    fn rename_(&mut self, new: Identity) {
        if new.addr == self.local {
            return;
        }
        if let Some(entry) = Self::entry_for(&mut self.entries, new) {
            entry.known = true;
            self.touch();
        }
    }

    /// Sets whether foca currently suspects the member at `addr` (polled, foca has no notice).
    pub fn set_suspect(&mut self, id: Identity, suspect: bool) {
        if let Some(entry) = self.entries.get_mut(&id.addr)
            && entry.id == id
            && entry.up
            && entry.suspect != suspect
        {
            entry.suspect = suspect;
            self.touch();
        }
    }

    /// A meta arrived (broadcast or push-pull). Returns true when it was news.
    pub fn apply_meta(&mut self, meta: Meta) -> bool {
        // Most metas of a push-pull or a datagram are known already: one look-up says so,
        // where the tracked change below takes several (the same answer: an older or equal
        // meta is never news).
        let known = self.meta_orders.get(&meta.id.addr);
        if known.is_some_and(|order| *order >= meta.order()) {
            return false;
        }
        self.tracked(meta.id.addr, |t| t.apply_meta_(meta))
    }

    fn apply_meta_(&mut self, meta: Meta) -> bool {
        let addr = meta.id.addr;
        if addr == self.local && meta.id.generation != self.entries[&self.local].id.generation {
            return false; // an echo of an older (or foreign) self
        }
        let entry = self
            .entries
            .entry(addr)
            .or_insert_with(|| Entry::new(meta.id));
        if entry
            .meta
            .as_ref()
            .is_some_and(|m| m.order() >= meta.order())
        {
            return false;
        }
        self.meta_orders.insert(addr, meta.order());
        let before = entry.meta.replace(meta);
        self.touch();
        let entry = &self.entries[&addr];
        if entry.joined
            && before.is_some_and(|b| {
                let now = entry.meta.as_ref().expect("just set");
                b.name != now.name || b.tags != now.tags || b.role != now.role
            })
        {
            let member = entry.member();
            self.events.push(Event::Member {
                kind: MemberEventKind::Update,
                member,
            });
        }
        self.try_join(addr);
        true
    }

    /// A leave intent arrived for `id`. `forced` marks an operator's `force-leave`, which never
    /// turns a live member into `leaving`. Returns true when it was news.
    pub fn apply_intent(&mut self, id: Identity, forced: bool) -> bool {
        self.tracked(id.addr, |t| t.apply_intent_(id, forced))
    }

    fn apply_intent_(&mut self, id: Identity, forced: bool) -> bool {
        if id.addr == self.local {
            return false;
        }
        let entry = self
            .entries
            .entry(id.addr)
            .or_insert_with(|| Entry::new(id));
        if entry.known && id.generation < entry.id.generation {
            return false; // about an older incarnation
        }
        let known_gen = entry.intent_gen.unwrap_or(0);
        let news = match entry.intent_gen {
            None => true,
            Some(_) if id.generation > known_gen => true,
            Some(_) if id.generation < known_gen => false,
            // Same generation: an own intent upgrades a forced one, nothing else is news.
            Some(_) => entry.forced && !forced,
        };
        if !news {
            return false;
        }
        entry.intent_gen = Some(id.generation);
        entry.forced = forced;
        entry.heard = false;
        self.changed = true;
        self.revision += 1;
        if entry.intent() && !entry.up && entry.told_failed {
            entry.told_failed = false;
            let member = entry.member();
            self.events.push(Event::Member {
                kind: MemberEventKind::Leave,
                member,
            });
        }
        true
    }

    fn try_join(&mut self, addr: SocketAddr) {
        let Some(entry) = self.entries.get(&addr) else {
            return;
        };
        if entry.up && !entry.joined && entry.meta.is_some() {
            let member = entry.member();
            // Names identify members for people (Serf keys by name): a member back under its
            // name at another address replaces its dead entry instead of standing beside it.
            // (Only entries that are not up can be stale: none of this name, no scan.)
            let stale: Vec<SocketAddr> = if !self.sums.down_name_exists(&member.name) {
                Vec::new()
            } else {
                self.entries
                    .values()
                    .filter(|e| {
                        e.id.addr != addr
                            && !e.up
                            && e.meta.as_ref().is_some_and(|m| m.name == member.name)
                    })
                    .map(|e| e.id.addr)
                    .collect()
            };
            for old in stale {
                if let Some(gone) = self.entries.remove(&old) {
                    self.forget_indexed(&gone);
                    self.sums.remove(&gone);
                }
            }
            if let Some(entry) = self.entries.get_mut(&addr) {
                entry.joined = true;
            }
            self.events.push(Event::Member {
                kind: MemberEventKind::Join,
                member,
            });
        }
    }

    /// Events produced since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Marks the table changed.
    fn touch(&mut self) {
        self.changed = true;
        self.revision += 1;
    }

    /// A number that grows on every change (never reset, unlike [`Self::take_changed`]).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// True (once) when the visible table changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::replace(&mut self.changed, false)
    }

    /// The status of the member at `addr`, if [`Self::members`] lists it.
    pub fn status_of(&self, addr: SocketAddr) -> Option<Status> {
        self.entries
            .get(&addr)
            .filter(|e| e.known && e.meta.is_some())
            .map(Entry::status)
    }

    /// Another live member using the local node's name, if any.
    pub fn name_conflict(&self) -> Option<Identity> {
        let name = &self.local_meta().name;
        self.entries
            .values()
            .find(|e| {
                e.id.addr != self.local && e.up && e.meta.as_ref().is_some_and(|m| &m.name == name)
            })
            .map(|e| e.id)
    }

    /// All known metas (for push-pull).
    pub fn metas(&self) -> Vec<Meta> {
        // Sized up front: `filter_map` gives no lower bound, and growing the vector by
        // doubling copied a thousand metas about ten times per push-pull.
        let mut metas = Vec::with_capacity(self.entries.len());
        metas.extend(self.entries.values().filter_map(|e| e.meta.clone()));
        metas
    }

    /// Identities with a leave intent (for push-pull), with whether it was forced.
    pub fn intents(&self) -> Vec<(Identity, bool)> {
        self.entries
            .values()
            .filter_map(|e| {
                let generation = e.intent_gen?;
                Some((
                    Identity {
                        addr: e.id.addr,
                        generation,
                    },
                    e.forced,
                ))
            })
            .collect()
    }

    /// The member `id` announced that its meta is now at `version` (the meta itself was too
    /// large to gossip). Returns true when that is newer than what is known or announced: the
    /// caller then fetches it by push-pull.
    pub fn announce_meta(&mut self, id: Identity, version: u64) -> bool {
        self.tracked(id.addr, |t| t.announce_meta_(id, version))
    }

    fn announce_meta_(&mut self, id: Identity, version: u64) -> bool {
        if id.addr == self.local {
            return false;
        }
        let order = (id.generation, version);
        let entry = self
            .entries
            .entry(id.addr)
            .or_insert_with(|| Entry::new(id));
        let known = entry.meta.as_ref().map(Meta::order).max(entry.announced);
        if known.is_some_and(|k| k >= order) {
            return false;
        }
        self.announced += usize::from(entry.announced.replace(order).is_none());
        true
    }

    /// The member `id` itself sent its state: whatever it announced is now known or bogus.
    pub fn settle_announced(&mut self, id: Identity) {
        if let Some(entry) = self.entries.get_mut(&id.addr) {
            self.announced =
                (self.announced).saturating_sub(usize::from(entry.announced.take().is_some()));
            self.sums.changes = self.sums.changes.wrapping_add(1);
        }
    }

    /// Counts of members per status.
    pub fn count(&self, status: Status) -> usize {
        self.entries
            .values()
            .filter(|e| e.known && e.meta.is_some() && e.status() == status)
            .count()
    }
}

mod lookups;

mod listing;

#[cfg(test)]
mod tests;
