//! What a node lists: one row per name ([`Membership::members`]), and members that left
//! before this node joined, learned from a push-pull ([`Membership::learn_departed`]), so a
//! node that joined later lists them `left` as the older nodes do.

use std::time::Instant;

use super::{Entry, Identity, Member, Membership, Status};

impl Membership {
    /// Every member foca has told us about whose name and tags are known (and the local one),
    /// sorted by name. A member without its meta yet is not listed, just as it has not
    /// "joined" for the handlers. Names identify members: a name is listed by its live holders
    /// (two only while a name conflict is settled), else by its newest departed one only.
    pub fn members(&self) -> Vec<Member> {
        let mut rows: Vec<&Entry> = self
            .entries
            .values()
            .filter(|e| e.known && e.meta.is_some())
            .collect();
        rows.sort_by(|a, b| name_of(a).cmp(name_of(b)).then(a.id.addr.cmp(&b.id.addr)));
        let mut out = Vec::with_capacity(rows.len());
        for group in rows.chunk_by(|a, b| name_of(a) == name_of(b)) {
            let live = |e: &&&Entry| e.up || e.id.addr == self.local;
            if group.iter().any(|e| live(&e)) {
                out.extend(group.iter().filter(|e| live(e)).map(|e| e.member()));
            } else if let Some(newest) = group.iter().max_by_key(|e| e.id.generation) {
                out.push(newest.member());
            }
        }
        out
    }

    /// The member row for `name`, if any: the one [`Self::members`] lists.
    pub fn find_by_name(&self, name: &str) -> Option<(Identity, Status)> {
        self.entries
            .values()
            .filter(|e| e.known && e.meta.as_ref().is_some_and(|m| m.name == name))
            .max_by_key(|e| (e.up || e.id.addr == self.local, e.id.generation))
            .map(|e| (e.id, e.status()))
    }

    /// A push-pull says `id` is down, and foca, which never knew the member, registered it
    /// down without a notice. With its meta and its own leave intent for that identity
    /// already here (from the same push-pull; a force-leave's counts too), it is listed `left` from `now` until the
    /// tombstone timeout, as the sender lists it. No event: it never joined for this node
    /// (Serf's handlers do not run for members that left before the node joined either).
    /// Returns true if the table changed.
    pub fn learn_departed(&mut self, id: Identity, now: Instant) -> bool {
        self.tracked(id.addr, |t| t.learn_departed_(id, now))
    }

    fn learn_departed_(&mut self, id: Identity, now: Instant) -> bool {
        let Some(entry) = self.entries.get_mut(&id.addr) else {
            return false;
        };
        if entry.known
            || entry.id != id
            || id.addr == self.local
            || entry.meta.is_none()
            || !entry.intent()
        {
            return false;
        }
        entry.known = true;
        entry.up = false;
        entry.down_since = Some(now);
        self.touch();
        true
    }
}

/// The name an entry is listed under (entries without a meta are never listed).
fn name_of(entry: &Entry) -> &str {
    entry.meta.as_ref().map_or("", |m| m.name.as_str())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::membership::Meta;

    fn id(port: u16, generation: u64) -> Identity {
        Identity {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            generation,
        }
    }

    fn meta(port: u16, generation: u64, name: &str) -> Meta {
        Meta {
            id: id(port, generation),
            version: 0,
            name: name.to_string(),
            tags: BTreeMap::new(),
            role: Default::default(),
        }
    }

    fn table() -> Membership {
        let mut t = Membership::new(
            meta(1, 1, "self"),
            Duration::from_secs(60),
            Duration::from_secs(30),
        );
        t.take_events();
        t
    }

    fn rows(t: &Membership) -> Vec<(String, SocketAddr, Status)> {
        t.members()
            .into_iter()
            .map(|m| (m.name, m.addr, m.status))
            .collect()
    }

    /// Issue 11: after a name conflict the winner listed its name twice (itself and the
    /// loser, left).
    #[test]
    fn a_name_is_listed_once_by_its_live_holder_else_by_its_newest_departed_one() {
        let now = Instant::now();
        let mut t = table();
        t.apply_meta(meta(2, 1, "self"));
        t.member_up(id(2, 1));
        assert_eq!(rows(&t).len(), 2, "both live while the conflict is settled");
        t.apply_intent(id(2, 1), false);
        t.member_down(id(2, 1), now);
        assert_eq!(rows(&t), [("self".into(), id(1, 1).addr, Status::Alive)]);
        assert_eq!(t.find_by_name("self").map(|(i, _)| i), Some(id(1, 1)));

        for (port, generation) in [(3, 5), (4, 9)] {
            t.apply_meta(meta(port, generation, "web"));
            t.member_up(id(port, generation));
            t.member_down(id(port, generation), now);
        }
        let web: Vec<_> = rows(&t).into_iter().filter(|r| r.0 == "web").collect();
        assert_eq!(web, [("web".into(), id(4, 9).addr, Status::Failed)]);
    }

    /// Issue 11: a node that joined later did not list the members that had left.
    #[test]
    fn a_member_that_left_before_this_node_joined_is_listed_left_without_an_event() {
        let now = Instant::now();
        let mut t = table();
        t.apply_meta(meta(2, 1, "gone"));
        assert!(
            !t.learn_departed(id(2, 1), now),
            "no intent: not known to have left"
        );
        t.apply_intent(id(2, 1), false);
        assert!(!t.learn_departed(id(2, 7), now), "another generation");
        assert!(t.learn_departed(id(2, 1), now));
        assert_eq!(rows(&t)[0], ("gone".into(), id(2, 1).addr, Status::Left));
        assert!(t.take_events().is_empty(), "it never joined for this node");
        assert!(!t.learn_departed(id(2, 1), now), "once");
        assert!(
            t.reap(now + Duration::from_secs(29)).is_empty(),
            "kept as a tombstone"
        );
        assert_eq!(t.reap(now + Duration::from_secs(30)), [id(2, 1)]);
    }
}
