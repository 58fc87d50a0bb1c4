use super::*;

fn id(port: u16, generation: u64) -> Identity {
    Identity {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        generation,
    }
}

fn meta(port: u16, generation: u64, version: u64, name: &str) -> Meta {
    Meta {
        id: id(port, generation),
        version,
        name: name.to_string(),
        tags: BTreeMap::from([("role".to_string(), "web".to_string())]),
        role: Default::default(),
    }
}

fn table() -> Membership {
    let mut t = Membership::new(
        meta(1, 1, 0, "self"),
        Duration::from_secs(60),
        Duration::from_secs(30),
    );
    t.take_events();
    t
}

fn kinds(t: &mut Membership) -> Vec<(MemberEventKind, String, Status)> {
    t.take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Member { kind, member } => Some((kind, member.name, member.status)),
            Event::User(_) | Event::Query(_) => None,
        })
        .collect()
}

#[test]
fn local_member_joins_at_start_like_serf() {
    let mut t = Membership::new(meta(1, 1, 0, "self"), Duration::ZERO, Duration::ZERO);
    assert_eq!(
        kinds(&mut t),
        vec![(MemberEventKind::Join, "self".into(), Status::Alive)]
    );
}

#[test]
fn member_joins_only_once_up_and_named() {
    let mut t = table();
    t.member_up(id(2, 5));
    assert!(kinds(&mut t).is_empty(), "no name yet, no join");
    assert_eq!(t.members().len(), 1, "not listed before its name is known");
    assert!(t.apply_meta(meta(2, 5, 0, "web-1")));
    assert_eq!(
        kinds(&mut t),
        vec![(MemberEventKind::Join, "web-1".into(), Status::Alive)]
    );
    assert!(
        !t.apply_meta(meta(2, 5, 0, "web-1")),
        "same version is not news"
    );
}

#[test]
fn meta_before_up_joins_when_up_arrives() {
    let mut t = table();
    t.apply_meta(meta(2, 5, 0, "web-1"));
    assert!(kinds(&mut t).is_empty());
    assert!(
        t.members().iter().all(|m| m.name != "web-1"),
        "not listed before foca knows it"
    );
    t.member_up(id(2, 5));
    assert_eq!(kinds(&mut t)[0].0, MemberEventKind::Join);
}

#[test]
fn down_without_intent_is_failed_and_with_intent_is_left() {
    let mut t = table();
    let now = Instant::now();
    for (port, name) in [(2, "a"), (3, "b")] {
        t.member_up(id(port, 1));
        t.apply_meta(meta(port, 1, 0, name));
    }
    t.take_events();
    assert!(t.apply_intent(id(3, 1), false));
    assert_eq!(t.find_by_name("b").map(|x| x.1), Some(Status::Leaving));
    t.member_down(id(2, 1), now);
    t.member_down(id(3, 1), now);
    assert_eq!(
        kinds(&mut t),
        vec![
            (MemberEventKind::Failed, "a".into(), Status::Failed),
            (MemberEventKind::Leave, "b".into(), Status::Left),
        ]
    );
}

#[test]
fn intent_after_down_turns_failed_into_left() {
    let mut t = table();
    t.member_up(id(2, 1));
    t.apply_meta(meta(2, 1, 0, "a"));
    t.take_events();
    t.member_down(id(2, 1), Instant::now());
    assert!(t.apply_intent(id(2, 1), false));
    assert_eq!(
        kinds(&mut t),
        vec![
            (MemberEventKind::Failed, "a".into(), Status::Failed),
            (MemberEventKind::Leave, "a".into(), Status::Left),
        ]
    );
}

#[test]
fn force_leave_never_marks_a_live_member_leaving() {
    let mut t = table();
    t.member_up(id(2, 1));
    t.apply_meta(meta(2, 1, 0, "a"));
    assert!(t.apply_intent(id(2, 1), true));
    assert_eq!(t.find_by_name("a").map(|x| x.1), Some(Status::Alive));
}

#[test]
fn newer_tags_of_a_joined_member_are_an_update() {
    let mut t = table();
    t.member_up(id(2, 1));
    t.apply_meta(meta(2, 1, 0, "a"));
    t.take_events();
    let mut newer = meta(2, 1, 1, "a");
    newer.tags.insert("weight".into(), "5".into());
    assert!(t.apply_meta(newer));
    assert!(!t.apply_meta(meta(2, 1, 0, "a")), "older version ignored");
    assert_eq!(
        kinds(&mut t),
        vec![(MemberEventKind::Update, "a".into(), Status::Alive)]
    );
}

#[test]
fn restarted_member_joins_again_after_failing() {
    let mut t = table();
    t.member_up(id(2, 1));
    t.apply_meta(meta(2, 1, 0, "a"));
    t.member_down(id(2, 1), Instant::now());
    t.take_events();
    t.rename(id(2, 1), id(2, 2));
    t.member_up(id(2, 2));
    assert_eq!(
        kinds(&mut t),
        vec![(MemberEventKind::Join, "a".into(), Status::Alive)]
    );
    t.member_down(id(2, 1), Instant::now());
    assert!(
        kinds(&mut t).is_empty(),
        "news about the old generation is stale"
    );
    assert_eq!(t.find_by_name("a").map(|x| x.1), Some(Status::Alive));
}

#[test]
fn failed_and_left_members_are_reaped_after_their_timeouts() {
    let mut t = table();
    let start = Instant::now();
    for (port, name) in [(2, "a"), (3, "b")] {
        t.member_up(id(port, 1));
        t.apply_meta(meta(port, 1, 0, name));
    }
    t.apply_intent(id(3, 1), false);
    t.member_down(id(2, 1), start);
    t.member_down(id(3, 1), start);
    t.take_events();
    assert!(t.reap(start + Duration::from_secs(10)).is_empty());
    assert_eq!(t.reap(start + Duration::from_secs(30)), vec![id(3, 1)]);
    assert_eq!(t.reap(start + Duration::from_secs(60)), vec![id(2, 1)]);
    let reaped: Vec<_> = kinds(&mut t).into_iter().map(|k| (k.0, k.1)).collect();
    assert_eq!(
        reaped,
        vec![
            (MemberEventKind::Reap, "b".into()),
            (MemberEventKind::Reap, "a".into())
        ]
    );
    assert_eq!(t.members().len(), 1);
}

#[test]
fn digest_matches_for_the_same_live_view_in_any_order() {
    let mut a = table();
    let mut b = table();
    a.member_up(id(2, 1));
    a.apply_meta(meta(2, 1, 0, "x"));
    a.member_up(id(3, 1));
    b.member_up(id(3, 1));
    b.apply_meta(meta(2, 1, 0, "x"));
    assert_ne!(a.digest(), b.digest());
    b.member_up(id(2, 1));
    assert_eq!(a.digest(), b.digest());
    b.member_down(id(3, 1), Instant::now());
    assert_ne!(a.digest(), b.digest());
}

/// The digest as it was first defined (the address hashed as its text, formatted each time):
/// agents of different versions must agree on it, or every piggybacked digest would differ.
fn digest_by_definition(t: &Membership) -> u64 {
    let hash = |parts: &[&[u8]]| {
        let mut h = Fnv::new();
        for p in parts {
            h.write(p);
        }
        h.finish()
    };
    let mut sum = 0u64;
    for e in t.entries.values() {
        let addr = e.id.addr.to_string();
        let generation = e.id.generation.to_le_bytes();
        if e.up {
            let version = e
                .meta
                .as_ref()
                .filter(|m| m.id.generation == e.id.generation)
                .map_or(0, |m| m.version);
            sum = sum.wrapping_add(hash(&[
                addr.as_bytes(),
                &generation,
                &version.to_le_bytes(),
            ]));
        } else if e.known && e.intent() {
            sum = sum.wrapping_add(hash(&[b"left", addr.as_bytes(), &generation]));
        }
    }
    sum
}

#[test]
fn the_digest_hashes_addresses_as_text_as_it_always_did() {
    let mut t = table();
    assert_eq!(t.digest(), digest_by_definition(&t));
    t.member_up(id(2, 1));
    t.apply_meta(meta(2, 1, 3, "x"));
    t.member_up(id(3, 7));
    t.apply_intent(id(4, 2), false);
    t.member_down(id(4, 2), Instant::now());
    assert_eq!(
        t.count(Status::Left),
        0,
        "no meta: not listed, but in the digest"
    );
    assert_eq!(t.digest(), digest_by_definition(&t));
    let v6 = Identity {
        addr: "[fd00::1]:7948".parse().expect("addr"),
        generation: 5,
    };
    t.member_up(v6);
    assert_eq!(t.digest(), digest_by_definition(&t));
}

#[test]
fn a_live_member_that_restarts_fast_stays_alive_under_its_new_generation() {
    let mut t = table();
    t.member_up(id(2, 1));
    t.apply_meta(meta(2, 1, 0, "a"));
    t.take_events();
    // foca: the new identity wins, the old one was active, so only Rename is notified.
    t.rename(id(2, 1), id(2, 2));
    assert_eq!(t.find_by_name("a").map(|x| x.1), Some(Status::Alive));
    assert!(
        kinds(&mut t).is_empty(),
        "no event for a restart nobody saw fail"
    );
    let mut newer = meta(2, 2, 0, "a");
    newer.tags.insert("v".into(), "2".into());
    assert!(t.apply_meta(newer));
    assert_eq!(kinds(&mut t)[0].0, MemberEventKind::Update);
}

#[test]
fn an_intent_of_an_older_generation_does_not_mark_the_new_one_left() {
    let mut t = table();
    t.member_up(id(2, 1));
    t.apply_meta(meta(2, 1, 0, "a"));
    t.apply_intent(id(2, 1), false);
    t.member_down(id(2, 1), Instant::now());
    t.rename(id(2, 1), id(2, 2));
    t.member_up(id(2, 2));
    assert_eq!(t.find_by_name("a").map(|x| x.1), Some(Status::Alive));
    t.take_events();
    t.member_down(id(2, 2), Instant::now());
    assert_eq!(kinds(&mut t)[0].0, MemberEventKind::Failed);
}

#[test]
fn a_member_back_under_its_name_at_a_new_address_replaces_its_dead_entry() {
    let mut t = table();
    t.member_up(id(2, 1));
    t.apply_meta(meta(2, 1, 0, "a"));
    t.member_down(id(2, 1), Instant::now());
    t.member_up(id(3, 5));
    t.apply_meta(meta(3, 5, 0, "a"));
    let rows: Vec<_> = t.members().into_iter().filter(|m| m.name == "a").collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].addr.port(), 3);
    assert_eq!(rows[0].status, Status::Alive);
}

#[test]
fn an_announced_meta_version_makes_the_known_meta_stale_until_it_arrives() {
    let mut t = table();
    let other = id(2, 1);
    t.member_up(other);
    assert!(t.apply_meta(meta(2, 1, 0, "b")));
    assert!(t.has_current_meta(other));
    assert!(t.announce_meta(other, 3), "newer version is news");
    assert!(
        !t.announce_meta(other, 3),
        "the same announcement twice is not"
    );
    assert!(!t.announce_meta(other, 2), "nor an older one");
    assert!(!t.has_current_meta(other), "stale until version 3 arrives");
    assert!(t.apply_meta(meta(2, 1, 3, "b")));
    assert!(t.has_current_meta(other));
    assert!(!t.announce_meta(other, 3), "already have it");
    assert!(
        !t.announce_meta(id(1, 1), 9),
        "own announcements are ignored"
    );
}

#[test]
fn a_new_health_state_or_group_is_a_member_update_and_listed() {
    use crate::role::{Group, Health};
    let mut t = table();
    t.member_up(id(2, 5));
    t.apply_meta(meta(2, 5, 0, "lb-1"));
    t.take_events();
    let mut next = meta(2, 5, 1, "lb-1");
    next.role.checks.insert("haproxy".into(), Health::Critical);
    next.role.group = Some(Group {
        name: "lb".into(),
        priority: 150,
        primary: false,
    });
    assert!(t.apply_meta(next.clone()));
    assert_eq!(
        kinds(&mut t),
        vec![(MemberEventKind::Update, "lb-1".into(), Status::Alive)]
    );
    let listed = t.members().into_iter().find(|m| m.name == "lb-1");
    assert_eq!(listed.map(|m| m.role), Some(next.role.clone()));
    let mut same = next.clone();
    same.version = 2;
    assert!(t.apply_meta(same), "a newer version is applied");
    assert!(kinds(&mut t).is_empty(), "an unchanged role is no update");
}

#[test]
fn the_local_role_bumps_the_version_and_is_listed() {
    use crate::role::Health;
    let mut t = table();
    let mut role = Role::default();
    role.checks.insert("web".into(), Health::Passing);
    let before = t.local_meta().version;
    let meta = t.set_local_role(role.clone());
    assert_eq!(meta.version, before + 1);
    assert_eq!(t.local_meta().role, role);
}

#[test]
fn in_plaintext_a_member_known_to_have_left_stays_out_of_the_digest() {
    // Issue 10: in plaintext no peer relays a leave intent, so a node that never got one (a
    // newcomer, one cut off during the leave) cannot catch up: with leave knowledge in the
    // digest the two would push-pull every sync interval until the tombstone is reaped.
    let knows_left = |without_left: bool| {
        let mut t = table();
        if without_left {
            t.digest_without_left();
        }
        t.member_up(id(2, 1));
        t.apply_meta(meta(2, 1, 0, "x"));
        t.apply_intent(id(2, 1), false);
        t.member_down(id(2, 1), Instant::now());
        assert_eq!(t.status_of(id(2, 1).addr), Some(Status::Left));
        t
    };
    let newcomer = |without_left: bool| {
        let mut t = table();
        if without_left {
            t.digest_without_left();
        }
        t
    };
    assert_ne!(knows_left(false).digest(), newcomer(false).digest());
    assert_eq!(knows_left(true).digest(), newcomer(true).digest());
}

#[test]
fn a_restarted_member_whose_new_meta_is_missing_is_listed_critical_and_not_primary() {
    // Issue 12: lb2 briefly took a restarted lb1 for a healthy primary (its previous life's
    // role) and ran on-backup, then on-primary again once lb1's own meta arrived.
    use crate::role::{Group, Health};
    let mut t = table();
    t.member_up(id(2, 5));
    let mut old = meta(2, 5, 3, "lb-1");
    old.role.checks.insert("haproxy".into(), Health::Passing);
    old.role.group = Some(Group {
        name: "lb".into(),
        priority: 150,
        primary: true,
    });
    t.apply_meta(old);
    t.member_up(id(2, 6));
    let listed = t.members().into_iter().find(|m| m.name == "lb-1");
    let role = listed.map(|m| m.role).expect("still listed under its name");
    assert_eq!(role.health(), Some(Health::Critical));
    assert_eq!(
        role.group.map(|g| (g.priority, g.primary)),
        Some((150, false))
    );
}
