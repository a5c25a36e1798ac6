//! The permission catalogue as the code knows it, and grant scopes.
//!
//! The database's `permissions` table is seeded by migrations with exactly these
//! names (a test compares the two), so a route guard can only name a permission
//! that exists, and a typo is a compile error rather than a route nobody can use.

use serde::{Deserialize, Serialize};

/// One `resource.action` permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    FileUpload,
    FileDownload,
    FileShare,
    FileDelete,
    FileClassify,
    AdminViewLogs,
    AdminManageRoles,
    IncidentManage,
    UsersView,
    UsersCreate,
    UsersEdit,
    UsersDelete,
}

impl Permission {
    pub const ALL: &'static [Permission] = &[
        Permission::FileUpload,
        Permission::FileDownload,
        Permission::FileShare,
        Permission::FileDelete,
        Permission::FileClassify,
        Permission::AdminViewLogs,
        Permission::AdminManageRoles,
        Permission::IncidentManage,
        Permission::UsersView,
        Permission::UsersCreate,
        Permission::UsersEdit,
        Permission::UsersDelete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::FileUpload => "file.upload",
            Permission::FileDownload => "file.download",
            Permission::FileShare => "file.share",
            Permission::FileDelete => "file.delete",
            Permission::FileClassify => "file.classify",
            Permission::AdminViewLogs => "admin.view_logs",
            Permission::AdminManageRoles => "admin.manage_roles",
            Permission::IncidentManage => "incident.manage",
            Permission::UsersView => "users.view",
            Permission::UsersCreate => "users.create",
            Permission::UsersEdit => "users.edit",
            Permission::UsersDelete => "users.delete",
        }
    }

    pub fn parse(name: &str) -> Option<Permission> {
        Permission::ALL.iter().copied().find(|p| p.as_str() == name)
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which objects a grant covers, narrowest first: the holder's own, the holder's
/// department's, or the whole tenant's. `Ord` follows that order, so the widest of
/// several grants is their `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(
    description = "Which objects a grant covers: the holder's own, their department's, or the whole organisation's."
)]
pub enum Scope {
    Own,
    Department,
    Tenant,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Tenant => "tenant",
            Scope::Department => "department",
            Scope::Own => "own",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        match name {
            "tenant" => Some(Scope::Tenant),
            "department" => Some(Scope::Department),
            "own" => Some(Scope::Own),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permission_name_parses_back_to_itself() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(*p));
        }
        assert_eq!(Permission::parse("file.delete_everything"), None);
    }

    #[test]
    fn the_widest_scope_is_the_maximum() {
        assert_eq!([Scope::Own, Scope::Tenant, Scope::Department].into_iter().max(), Some(Scope::Tenant));
        assert!(Scope::Own < Scope::Department);
    }
}
