//! Coalescing of user events, as Serf's `userEventCoalescer` does it: inside the quiet window,
//! of the events of one name only those with the newest Lamport time are kept (several, when
//! several were sent at that time). Events sent with `--coalesce=false` never come here; they
//! run at once.

use std::collections::BTreeMap;

use shoal_core::UserEvent;

/// Coalescable user events waiting for the quiet window to end.
#[derive(Debug, Default)]
pub struct UserPending {
    /// Per name: the newest Lamport time seen and the events at that time.
    latest: BTreeMap<String, (u64, Vec<UserEvent>)>,
}

impl UserPending {
    /// Holds `event`, dropping older events of its name (and it, if a newer one is held).
    pub fn add(&mut self, event: UserEvent) {
        match self.latest.get_mut(&event.name) {
            Some((ltime, events)) if *ltime == event.ltime => events.push(event),
            Some((ltime, _)) if *ltime > event.ltime => {}
            _ => {
                let name = event.name.clone();
                self.latest.insert(name, (event.ltime, vec![event]));
            }
        }
    }

    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Everything held, oldest Lamport time first; empties the holder.
    pub fn take(&mut self) -> Vec<UserEvent> {
        let mut out: Vec<UserEvent> = std::mem::take(&mut self.latest)
            .into_values()
            .flat_map(|(_, events)| events)
            .collect();
        out.sort_by_key(|e| e.ltime);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ltime: u64, name: &str, payload: &str) -> UserEvent {
        UserEvent {
            ltime,
            name: name.into(),
            payload: payload.as_bytes().to_vec(),
            coalesce: true,
        }
    }

    #[test]
    fn the_newest_event_of_each_name_is_kept_and_ties_are_all_kept() {
        let mut p = UserPending::default();
        p.add(event(3, "deploy", "v1"));
        p.add(event(5, "deploy", "v2"));
        p.add(event(4, "deploy", "late"));
        p.add(event(4, "restart", "web"));
        p.add(event(5, "deploy", "v2b"));
        let got: Vec<(u64, String)> = p
            .take()
            .into_iter()
            .map(|e| (e.ltime, String::from_utf8_lossy(&e.payload).into_owned()))
            .collect();
        assert_eq!(
            got,
            vec![(4, "web".into()), (5, "v2".into()), (5, "v2b".into())]
        );
        assert!(p.is_empty());
    }
}
