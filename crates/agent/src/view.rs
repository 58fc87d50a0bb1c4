//! The member view in the control API's JSON shape (also `SHOAL_MEMBERS_FILE`).

use shoal_core::{Member, View};
use shoal_proto::{MemberInfo, MembersResponse};

/// One member in Serf's JSON shape.
pub fn member_info(m: &Member) -> MemberInfo {
    MemberInfo {
        name: m.name.clone(),
        addr: m.addr.to_string(),
        port: m.addr.port(),
        status: m.status.as_str().to_string(),
        tags: m.tags.clone(),
    }
}

/// The whole view.
pub fn members(view: &View) -> MembersResponse {
    MembersResponse {
        members: view.members.iter().map(member_info).collect(),
    }
}
