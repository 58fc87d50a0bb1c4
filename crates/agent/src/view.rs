//! Members formatted for people and programs: the control API's JSON shape (also
//! `SHOAL_MEMBERS_FILE`) and the `k=v,k=v` tag text shared by the CLI tables and handler stdin.

use std::collections::BTreeMap;

use shoal_core::{Member, View};
use shoal_proto::{MemberInfo, MembersResponse, ProtocolInfo};

/// The protocol versions listed for every member: this build's wire version. A member in the
/// view speaks it (packets of another version are dropped, so such a member is never learned).
pub const PROTOCOL: ProtocolInfo = ProtocolInfo {
    max: shoal_core::envelope::VERSION,
    min: shoal_core::envelope::VERSION,
    version: shoal_core::envelope::VERSION,
};

/// One member in Serf's JSON shape.
pub fn member_info(m: &Member) -> MemberInfo {
    MemberInfo {
        name: m.name.clone(),
        addr: m.addr.to_string(),
        port: m.addr.port(),
        status: m.status.as_str().to_string(),
        tags: m.tags.clone(),
        protocol: PROTOCOL,
        health: m.role.health().map(|h| h.to_string()),
        checks: m.role.check_words(),
    }
}

/// The whole view.
pub fn members(view: &View) -> MembersResponse {
    MembersResponse {
        members: view.members.iter().map(member_info).collect(),
    }
}

/// Tags as `k=v,k=v`, sorted by key.
pub fn tags_string(tags: &BTreeMap<String, String>) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
