//! `GET /v1/primary[?group=G]`: a group's primary as this agent sees it. For its own group
//! (the default) that is what it acted on last (after `--primary-delay`, with its quorum),
//! with its state; for another group it is computed from the view now, an eligible member
//! that claims the role first (the member that ran on-primary), else the best one.

use hyper::StatusCode;
use shoal_core::role::safe_name;
use shoal_proto::{PrimaryCandidate, PrimaryInfo, PrimaryResponse};

use super::streams::{Refused, answer, bad_request, last, params};
use super::{ControlState, Reply, json};
use crate::primary::elect;

/// `GET /v1/primary`.
pub(super) fn answer_for(
    query: Option<&str>,
    st: &ControlState,
) -> Result<PrimaryResponse, Refused> {
    let params = params(query, &["group"])?;
    let own = st.primary.as_ref();
    let group = match (last(&params, "group").filter(|g| !g.is_empty()), own) {
        (Some(g), _) if !safe_name(g) => {
            return Err(bad_request(format!(
                "group {g:?} must be 1 to 128 ASCII letters, digits, '-', '_' or '.'"
            )));
        }
        (Some(g), _) => g.to_string(),
        (None, Some(p)) => p.settings.group.name.clone(),
        (None, None) => {
            return Err(bad_request(
                "this agent is in no group (--group): name one, ?group=NAME".into(),
            ));
        }
    };
    let view = st.node.view();
    let eligible = elect::eligible(&view.members, &group)
        .into_iter()
        .map(|(m, g)| PrimaryCandidate {
            name: m.name.clone(),
            priority: g.priority,
            claims: g.primary,
            status: m.status.as_str().to_string(),
        })
        .collect();
    let answer = match own.filter(|p| p.settings.group.name == group) {
        Some(p) => {
            let status = p.status();
            PrimaryResponse {
                group,
                primary: status.primary,
                previous: status.previous,
                state: status.state.map(|s| s.as_str().to_string()),
                eligible,
            }
        }
        None => PrimaryResponse {
            primary: elect::primary_of(&view.members, &group, false).map(|m| m.name.clone()),
            group,
            previous: None,
            state: None,
            eligible,
        },
    };
    Ok(answer)
}

pub(super) fn answer_reply(query: Option<&str>, st: &ControlState) -> Reply {
    answer(answer_for(query, st).map(|body| json(StatusCode::OK, &body)))
}

/// `/v1/info`'s `primary` section.
pub(crate) fn info(st: &ControlState) -> Option<PrimaryInfo> {
    let p = st.primary.as_ref()?;
    let status = p.status();
    Some(PrimaryInfo {
        group: p.settings.group.name.clone(),
        priority: p.settings.group.priority,
        state: status.state.map(|s| s.as_str().to_string()),
        primary: status.primary,
    })
}
