//! The [`Builder`]: what every spec builder reads (the request, the
//! services' facts, the roles assigned, the secrets known). The modules of
//! the parts add the methods that build their specs (`database`,
//! `workload`, `frontend`); `build` assembles the AppStack from them.

use super::facts::Facts;
use super::request::ComposeRequest;
use super::roles::{MigrationSource, Roles};

/// Everything the spec builders share.
pub(super) struct Builder<'a> {
    pub(super) request: &'a ComposeRequest,
    pub(super) stack_name: &'a str,
    pub(super) secret_name: String,
    pub(super) all: &'a [Facts<'a>],
    pub(super) roles: &'a Roles,
    pub(super) known_secrets: &'a [(String, String)],
}

impl Builder<'_> {
    pub(super) fn backend(&self) -> &Facts<'_> {
        &self.all[self.roles.backend]
    }

    pub(super) fn database(&self) -> Option<&Facts<'_>> {
        self.roles.database.map(|index| &self.all[index])
    }

    pub(super) fn migration_service(&self) -> Option<&Facts<'_>> {
        match &self.roles.migrations {
            Some(MigrationSource::Service(index)) => Some(&self.all[*index]),
            _ => None,
        }
    }

    pub(super) fn frontend(&self) -> Option<&Facts<'_>> {
        self.roles.frontend.map(|index| &self.all[index])
    }
}
