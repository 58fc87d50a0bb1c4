//! The name-conflict rule: two live members with one name. The one that started first (lower
//! generation, then lower address) keeps it; the other gives it up, leaves, and reports the
//! conflict in its view so the agent exits.

use std::net::SocketAddr;

use crate::identity::Identity;

/// What this node should do about a member that claims its name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The other one started first: give up the name and leave, with this message.
    GiveUp(String),
    /// This node started first: the other one will leave; say so once per member.
    Warn,
    /// Already handled.
    Nothing,
}

/// The conflict state of the local node.
#[derive(Debug, Default)]
pub(crate) struct NameConflict {
    lost: Option<String>,
    warned: Vec<SocketAddr>,
}

impl NameConflict {
    /// Why this node gave up its name, once it did.
    pub(crate) fn lost(&self) -> Option<&String> {
        self.lost.as_ref()
    }

    /// Judges `other`, a live member that claims `name`, against this node (`me`).
    pub(crate) fn judge(&mut self, name: &str, me: Identity, other: Identity) -> Verdict {
        if self.lost.is_some() {
            return Verdict::Nothing;
        }
        if (other.generation, other.addr) < (me.generation, me.addr) {
            let message = format!(
                "node name {name:?} is already used by the member at {}, which started first",
                other.addr
            );
            self.lost = Some(message.clone());
            Verdict::GiveUp(message)
        } else if self.warned.contains(&other.addr) {
            Verdict::Nothing
        } else {
            self.warned.push(other.addr);
            Verdict::Warn
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(port: u16, generation: u64) -> Identity {
        Identity {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            generation,
        }
    }

    #[test]
    fn the_node_that_started_later_gives_up_the_name_once() {
        let mut c = NameConflict::default();
        let verdict = c.judge("web", id(2, 20), id(1, 10));
        assert!(matches!(verdict, Verdict::GiveUp(ref m) if m.contains("started first")));
        assert!(c.lost().is_some());
        assert_eq!(c.judge("web", id(2, 20), id(1, 10)), Verdict::Nothing);
    }

    #[test]
    fn the_node_that_started_first_keeps_the_name_and_warns_once_per_member() {
        let mut c = NameConflict::default();
        assert_eq!(c.judge("web", id(1, 10), id(2, 20)), Verdict::Warn);
        assert_eq!(c.judge("web", id(1, 10), id(2, 20)), Verdict::Nothing);
        assert_eq!(c.judge("web", id(1, 10), id(3, 30)), Verdict::Warn);
        assert!(c.lost().is_none());
    }

    #[test]
    fn equal_generations_are_ordered_by_address() {
        let mut c = NameConflict::default();
        assert!(matches!(
            c.judge("web", id(2, 10), id(1, 10)),
            Verdict::GiveUp(_)
        ));
    }
}
