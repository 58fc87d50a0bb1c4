//! Primary selection, pure: who a member list makes a group's primary, what this node's state
//! should be ([`decide`]), and when to act on a change ([`Machine`], fed clock instants). No
//! I/O: the driver ([`super::driver`]) feeds it views and runs what it returns.
//!
//! The rule (the same on every member, each from its own view): eligible are the members of
//! the group that are alive (a suspect counts as alive here: it may only be slow; the driver
//! lists one suspect for longer than `--suspect-grace` as failed before it asks) and passing (a
//! member without checks is passing). The primary is the eligible member with the highest
//! priority, then the lowest name; with preemption off, an eligible member that claims the
//! role (`Group.primary`: it ran on-primary) keeps it, as VRRP's `nopreempt` keeps a master
//! whose adverts arrive.

use std::time::{Duration, Instant};

use shoal_core::{Group, Health, Member, Status};

/// This node's state in its group, with Keepalived's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// It holds the role (ran on-primary).
    Primary,
    /// Another member holds it, or none does (with too few members in sight, say).
    Backup,
    /// Its own checks do not pass.
    Fault,
}

impl State {
    /// The word scripts get in `SHOAL_STATE` (`primary`, `backup`, `fault`).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Primary => "primary",
            State::Backup => "backup",
            State::Fault => "fault",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The settings the election goes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// This node's group.
    pub group: String,
    /// Whether a better member takes the role from a working primary (`--preempt`).
    pub preempt: bool,
    /// Become primary only while seeing at least this many alive members of the group,
    /// counting itself (`--group-quorum`, at least 1).
    pub quorum: usize,
}

/// What this node should be, and who it takes for the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Its own state.
    pub state: State,
    /// The group's primary as this node sees it (`None`: no member qualifies).
    pub primary: Option<String>,
}

/// A member's group entry, if it is in `group`.
fn group_of<'a>(member: &'a Member, group: &str) -> Option<&'a Group> {
    member.role.group.as_ref().filter(|g| g.name == group)
}

/// Alive for the election: alive or suspect.
fn alive(member: &Member) -> bool {
    matches!(member.status, Status::Alive | Status::Suspect)
}

/// The eligible members of `group`, each with its group entry, best first (priority, then
/// name).
pub fn eligible<'a>(members: &'a [Member], group: &str) -> Vec<(&'a Member, &'a Group)> {
    let mut list: Vec<_> = members
        .iter()
        .filter(|m| alive(m) && m.role.effective_health() == Health::Passing)
        .filter_map(|m| group_of(m, group).map(|g| (m, g)))
        .collect();
    list.sort_by(|(a, ga), (b, gb)| gb.priority.cmp(&ga.priority).then(a.name.cmp(&b.name)));
    list
}

/// How many members of `group` are alive (or suspect), healthy or not.
pub fn alive_in_group(members: &[Member], group: &str) -> usize {
    members
        .iter()
        .filter(|m| alive(m) && group_of(m, group).is_some())
        .count()
}

/// The primary of `group` in `members`: the best eligible member; with `preempt` off, the
/// best eligible member that claims the role, if any does.
pub fn primary_of<'a>(members: &'a [Member], group: &str, preempt: bool) -> Option<&'a Member> {
    let list = eligible(members, group);
    let claimant = match preempt {
        true => None,
        false => list.iter().find(|(_, g)| g.primary),
    };
    claimant.or(list.first()).map(|(m, _)| *m)
}

/// What node `local` should be in its group, from `members` (its view). `may_promote` false
/// (just started, not yet joined) keeps it from taking the role: it is a backup seeing no
/// primary.
pub fn decide(members: &[Member], local: &str, rules: &Rules, may_promote: bool) -> Outcome {
    let healthy = members
        .iter()
        .find(|m| m.name == local)
        .is_some_and(|m| m.role.effective_health() == Health::Passing);
    let primary = match alive_in_group(members, &rules.group) >= rules.quorum {
        true => primary_of(members, &rules.group, rules.preempt).map(|m| m.name.clone()),
        false => None,
    }
    .filter(|p| may_promote || p != local);
    let state = match (healthy, primary.as_deref() == Some(local)) {
        (false, _) => State::Fault,
        (true, true) => State::Primary,
        (true, false) => State::Backup,
    };
    Outcome { state, primary }
}

/// A transition to act on: set the claim, and run the new state's script if the state changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The state acted on before (`None`: this is the first).
    pub from: Option<State>,
    /// The new outcome.
    pub to: Outcome,
    /// The primary acted on before (`SHOAL_PREVIOUS_PRIMARY`).
    pub previous: Option<String>,
}

impl Change {
    /// Whether this node's own state changed (its script runs), not only the primary it sees.
    pub fn state_changed(&self) -> bool {
        self.from != Some(self.to.state)
    }
}

/// What to do after a [`Machine::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Act on this change now.
    Act(Change),
    /// A change waits out `--primary-delay`: step again at this instant (or on a new view).
    WaitUntil(Instant),
    /// Nothing to do.
    Idle,
}

/// The transitions of this node, with `--primary-delay`: a new outcome is acted on once it
/// has held for the delay, except that stepping down (a primary that no longer should be)
/// and entering fault happen at once. Safety first: two primaries are worse than none for a
/// moment.
#[derive(Debug, Clone)]
pub struct Machine {
    delay: Duration,
    acted: Option<Outcome>,
    pending: Option<(Outcome, Instant)>,
}

impl Machine {
    /// A machine that has acted on nothing yet.
    pub fn new(delay: Duration) -> Self {
        Self {
            delay,
            acted: None,
            pending: None,
        }
    }

    /// The outcome acted on last.
    pub fn acted(&self) -> Option<&Outcome> {
        self.acted.as_ref()
    }

    /// Feeds the outcome the view asks for now.
    pub fn step(&mut self, desired: Outcome, now: Instant) -> Step {
        let Some(acted) = &self.acted else {
            // The first state: acted on at once, but a first promotion waits the delay like
            // any other (a backup seeing no primary meanwhile).
            if desired.state == State::Primary && !self.delay.is_zero() {
                self.pending = Some((desired, now));
                return self.act(Outcome {
                    state: State::Backup,
                    primary: None,
                });
            }
            return self.act(desired);
        };
        if *acted == desired {
            self.pending = None;
            return Step::Idle;
        }
        let at_once = self.delay.is_zero()
            || desired.state == State::Fault
            || acted.state == State::Primary
            || (acted.state == State::Fault && desired.state == State::Backup);
        if at_once {
            return self.act(desired);
        }
        match &self.pending {
            Some((waiting, since)) if *waiting == desired => {
                let due = *since + self.delay;
                if now >= due {
                    self.act(desired)
                } else {
                    Step::WaitUntil(due)
                }
            }
            _ => {
                self.pending = Some((desired, now));
                Step::WaitUntil(now + self.delay)
            }
        }
    }

    fn act(&mut self, to: Outcome) -> Step {
        if self.pending.as_ref().is_some_and(|(p, _)| *p == to) {
            self.pending = None;
        }
        let before = self.acted.replace(to.clone());
        Step::Act(Change {
            from: before.as_ref().map(|o| o.state),
            previous: before.and_then(|o| o.primary),
            to,
        })
    }

    /// When a pending change is due, if one waits.
    pub fn due(&self) -> Option<Instant> {
        self.pending.as_ref().map(|(_, since)| *since + self.delay)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shoal_core::Role;

    use super::*;

    fn member(name: &str, priority: u32, status: Status) -> Member {
        Member {
            name: name.into(),
            addr: "127.0.0.1:1".parse().expect("addr"),
            generation: 1,
            tags: BTreeMap::new(),
            role: Role {
                checks: BTreeMap::new(),
                group: Some(Group {
                    name: "lb".into(),
                    priority,
                    primary: false,
                }),
            },
            status,
        }
    }

    fn alive(name: &str, priority: u32) -> Member {
        member(name, priority, Status::Alive)
    }

    fn claiming(mut m: Member) -> Member {
        if let Some(g) = m.role.group.as_mut() {
            g.primary = true;
        }
        m
    }

    fn with_check(mut m: Member, health: Health) -> Member {
        m.role.checks.insert("web".into(), health);
        m
    }

    fn rules(preempt: bool, quorum: usize) -> Rules {
        Rules {
            group: "lb".into(),
            preempt,
            quorum,
        }
    }

    fn outcome(state: State, primary: Option<&str>) -> Outcome {
        Outcome {
            state,
            primary: primary.map(str::to_string),
        }
    }

    fn primary(members: &[Member], preempt: bool) -> Option<String> {
        primary_of(members, "lb", preempt).map(|m| m.name.clone())
    }

    #[test]
    fn the_highest_priority_wins_and_a_tie_goes_to_the_lower_name() {
        let members = [alive("c", 100), alive("a", 150), alive("b", 150)];
        assert_eq!(primary(&members, true).as_deref(), Some("a"));
        let members = [alive("c", 200), alive("a", 150)];
        assert_eq!(primary(&members, true).as_deref(), Some("c"));
        assert_eq!(primary(&[], true), None);
    }

    #[test]
    fn only_alive_passing_members_of_the_group_are_eligible_and_a_suspect_counts_as_alive() {
        let mut other = alive("x", 250);
        other.role.group = Some(Group {
            name: "db".into(),
            priority: 250,
            primary: false,
        });
        let members = [
            other,
            member("f", 240, Status::Failed),
            member("l", 230, Status::Left),
            member("g", 225, Status::Leaving),
            with_check(alive("w", 220), Health::Warning),
            with_check(alive("k", 210), Health::Critical),
            member("s", 200, Status::Suspect),
            with_check(alive("p", 100), Health::Passing),
        ];
        assert_eq!(primary(&members, true).as_deref(), Some("s"));
        let names: Vec<_> = eligible(&members, "lb")
            .iter()
            .map(|(m, _)| m.name.clone())
            .collect();
        assert_eq!(names, ["s", "p"]);
        // Healthy or not, alive members count toward the quorum.
        assert_eq!(alive_in_group(&members, "lb"), 4);
    }

    #[test]
    fn with_preemption_off_a_claiming_member_keeps_the_role_while_eligible() {
        let members = [alive("a", 150), claiming(alive("b", 100))];
        assert_eq!(primary(&members, false).as_deref(), Some("b"));
        assert_eq!(primary(&members, true).as_deref(), Some("a"));
        // A claimant that is no longer eligible loses it.
        let members = [
            alive("a", 150),
            claiming(with_check(alive("b", 100), Health::Critical)),
        ];
        assert_eq!(primary(&members, false).as_deref(), Some("a"));
        // Two claimants (a healed partition): the better one keeps it.
        let members = [
            claiming(alive("c", 50)),
            claiming(alive("b", 100)),
            alive("a", 150),
        ];
        assert_eq!(primary(&members, false).as_deref(), Some("b"));
    }

    #[test]
    fn a_newcomer_with_preemption_off_sees_the_existing_claim_and_stays_backup() {
        let members = [claiming(alive("b", 100)), alive("a", 150)];
        assert_eq!(
            decide(&members, "a", &rules(false, 1), true),
            outcome(State::Backup, Some("b"))
        );
        assert_eq!(
            decide(&members, "a", &rules(true, 1), true),
            outcome(State::Primary, Some("a"))
        );
    }

    #[test]
    fn a_node_below_the_group_quorum_sees_no_primary() {
        let members = [
            alive("a", 150),
            member("b", 100, Status::Failed),
            alive("c", 50),
        ];
        assert_eq!(
            decide(&members, "a", &rules(true, 2), true),
            outcome(State::Primary, Some("a"))
        );
        assert_eq!(
            decide(&members, "a", &rules(true, 3), true),
            outcome(State::Backup, None)
        );
        // Alone in a minority: never primary.
        let alone = [alive("c", 50), member("a", 150, Status::Failed)];
        assert_eq!(
            decide(&alone, "c", &rules(true, 2), true),
            outcome(State::Backup, None)
        );
    }

    #[test]
    fn a_node_whose_checks_fail_is_in_fault_and_sees_the_next_primary() {
        let members = [
            with_check(alive("a", 150), Health::Critical),
            alive("b", 100),
        ];
        assert_eq!(
            decide(&members, "a", &rules(true, 1), true),
            outcome(State::Fault, Some("b"))
        );
        let members = [with_check(alive("a", 150), Health::Warning)];
        assert_eq!(
            decide(&members, "a", &rules(true, 1), true),
            outcome(State::Fault, None)
        );
    }

    #[test]
    fn a_node_not_yet_joined_does_not_take_the_role() {
        let members = [alive("a", 150), alive("b", 100)];
        assert_eq!(
            decide(&members, "a", &rules(true, 1), false),
            outcome(State::Backup, None)
        );
        assert_eq!(
            decide(&members, "b", &rules(true, 1), false),
            outcome(State::Backup, Some("a"))
        );
    }

    #[test]
    fn without_a_delay_every_change_is_acted_on_at_once() {
        let mut m = Machine::new(Duration::ZERO);
        let t = Instant::now();
        let first = m.step(outcome(State::Backup, Some("a")), t);
        assert_eq!(
            first,
            Step::Act(Change {
                from: None,
                to: outcome(State::Backup, Some("a")),
                previous: None,
            })
        );
        assert_eq!(m.step(outcome(State::Backup, Some("a")), t), Step::Idle);
        let Step::Act(change) = m.step(outcome(State::Primary, Some("b")), t) else {
            panic!("not acted on");
        };
        assert!(change.state_changed());
        assert_eq!(change.from, Some(State::Backup));
        assert_eq!(change.previous.as_deref(), Some("a"));
    }

    #[test]
    fn a_promotion_waits_out_the_delay_and_a_flap_within_it_is_never_acted_on() {
        let d = Duration::from_secs(2);
        let mut m = Machine::new(d);
        let t = Instant::now();
        assert!(matches!(
            m.step(outcome(State::Backup, Some("a")), t),
            Step::Act(_)
        ));
        let up = outcome(State::Primary, Some("b"));
        assert_eq!(m.step(up.clone(), t), Step::WaitUntil(t + d));
        assert_eq!(m.due(), Some(t + d));
        // Back to the old outcome before the delay: nothing ran, nothing waits.
        assert_eq!(
            m.step(outcome(State::Backup, Some("a")), t + d / 2),
            Step::Idle
        );
        assert_eq!(m.due(), None);
        // Again, and held: acted on once the delay passed since this change was first seen.
        let later = t + d;
        assert_eq!(m.step(up.clone(), later), Step::WaitUntil(later + d));
        assert_eq!(
            m.step(up.clone(), later + d / 2),
            Step::WaitUntil(later + d)
        );
        let Step::Act(change) = m.step(up.clone(), later + d) else {
            panic!("not acted on");
        };
        assert_eq!(change.to, up);
        assert_eq!(change.previous.as_deref(), Some("a"));
    }

    #[test]
    fn a_change_of_outcome_during_the_delay_restarts_it() {
        let d = Duration::from_secs(2);
        let mut m = Machine::new(d);
        let t = Instant::now();
        assert!(matches!(
            m.step(outcome(State::Backup, Some("a")), t),
            Step::Act(_)
        ));
        assert_eq!(
            m.step(outcome(State::Backup, Some("b")), t),
            Step::WaitUntil(t + d)
        );
        let t2 = t + Duration::from_secs(1);
        assert_eq!(
            m.step(outcome(State::Backup, Some("c")), t2),
            Step::WaitUntil(t2 + d)
        );
        assert_eq!(
            m.step(outcome(State::Backup, Some("c")), t + d),
            Step::WaitUntil(t2 + d)
        );
        assert!(matches!(
            m.step(outcome(State::Backup, Some("c")), t2 + d),
            Step::Act(_)
        ));
    }

    #[test]
    fn stepping_down_and_entering_fault_happen_at_once_despite_the_delay() {
        let d = Duration::from_secs(5);
        let mut m = Machine::new(d);
        let t = Instant::now();
        assert!(matches!(
            m.step(outcome(State::Backup, None), t),
            Step::Act(_)
        ));
        let up = outcome(State::Primary, Some("a"));
        assert!(matches!(m.step(up.clone(), t), Step::WaitUntil(_)));
        assert!(matches!(m.step(up, t + d), Step::Act(_)));
        // A better member is back: down at once.
        let Step::Act(down) = m.step(outcome(State::Backup, Some("z")), t + d) else {
            panic!("the primary did not step down at once");
        };
        assert_eq!(
            (down.from, down.previous.as_deref()),
            (Some(State::Primary), Some("a"))
        );
        let Step::Act(fault) = m.step(outcome(State::Fault, Some("z")), t + d) else {
            panic!("fault waited");
        };
        assert!(fault.state_changed());
        // Healthy again, backup at once; a promotion from there waits.
        assert!(matches!(
            m.step(outcome(State::Backup, Some("z")), t + d),
            Step::Act(_)
        ));
        assert!(matches!(
            m.step(outcome(State::Primary, Some("a")), t + d),
            Step::WaitUntil(_)
        ));
    }

    #[test]
    fn a_first_promotion_with_a_delay_starts_as_backup() {
        let d = Duration::from_secs(1);
        let mut m = Machine::new(d);
        let t = Instant::now();
        let up = outcome(State::Primary, Some("a"));
        assert_eq!(
            m.step(up.clone(), t),
            Step::Act(Change {
                from: None,
                to: outcome(State::Backup, None),
                previous: None,
            })
        );
        assert_eq!(m.step(up.clone(), t), Step::WaitUntil(t + d));
        assert!(matches!(m.step(up, t + d), Step::Act(c) if c.from == Some(State::Backup)));
    }
}
