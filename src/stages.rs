//! The order of the stack, written once. The controller walks these stages
//! in order and stops at the first blocking one that is not done; `appstack
//! render` prints children in this order; the status has one component
//! condition per stage; the tables of the README and of the stages page of
//! the book are generated from it.

use crate::api::conditions::{reasons, types};
use crate::api::stack::{Migration, ValidatedStack};

/// One step of bringing a stack up. Declared in [`ORDER`]'s order, which
/// the derived ordering follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Secrets,
    Database,
    /// The gate of `approval: Manual` before a revision's migration.
    Approval,
    /// The backup before a migration (`migrations.backup`).
    Backup,
    Migrations,
    Backend,
    Frontend,
    Expose,
    Monitoring,
    /// The contract step (`migrations.postDeploy`), once the new release
    /// is the only one left.
    PostDeploy,
}

/// Every stage, in the order the stack comes up.
pub const ORDER: [Stage; 10] = [
    Stage::Secrets,
    Stage::Database,
    Stage::Approval,
    Stage::Backup,
    Stage::Migrations,
    Stage::Backend,
    Stage::Frontend,
    Stage::Expose,
    Stage::Monitoring,
    Stage::PostDeploy,
];

impl Stage {
    /// The component condition reporting this stage.
    pub fn condition(self) -> &'static str {
        match self {
            Stage::Secrets => types::SECRETS_READY,
            Stage::Database => types::DATABASE_READY,
            Stage::Approval => types::MIGRATION_APPROVED,
            Stage::Backup => types::BACKUP_READY,
            Stage::Migrations => types::MIGRATIONS_APPLIED,
            Stage::Backend => types::BACKEND_AVAILABLE,
            Stage::Frontend => types::FRONTEND_AVAILABLE,
            Stage::Expose => types::EXPOSE_READY,
            Stage::Monitoring => types::MONITORING_READY,
            Stage::PostDeploy => types::POST_DEPLOY_APPLIED,
        }
    }

    /// What the stage brings up, as a sentence would name it.
    pub fn noun(self) -> &'static str {
        match self {
            Stage::Secrets => "secrets",
            Stage::Database => "the database",
            Stage::Approval => "approval",
            Stage::Backup => "the backup",
            Stage::Migrations => "migrations",
            Stage::Backend => "the backend",
            Stage::Frontend => "the frontend",
            Stage::Expose => "exposure",
            Stage::Monitoring => "monitoring",
            Stage::PostDeploy => "the post-deploy step",
        }
    }

    /// Whether the stack can be Ready without this stage done, and whether
    /// the stages after it wait for it. Exposure and monitoring depend on
    /// what the cluster has installed (an ingress controller, a gateway, the
    /// Prometheus Operator) more than on the stack: they report, and never
    /// hold the stack back. The post-deploy step comes after them: it
    /// waits for nothing they do, and the stack is Ready once it ran.
    pub fn blocks(self) -> bool {
        !matches!(self, Stage::Expose | Stage::Monitoring)
    }

    /// What a spec sets to have this stage, when a stack has it only if
    /// asked: the approval gate, the backup before a migration and the
    /// post-deploy step.
    fn asked_with(self) -> Option<&'static str> {
        match self {
            Stage::Approval => Some("approval: Manual"),
            Stage::Backup => Some("backup.enabled"),
            Stage::PostDeploy => Some("postDeploy"),
            _ => None,
        }
    }

    /// Whether the stage is one a stack has only when its spec asks for it
    /// (see [`used_by`](Self::used_by)). A stack without it has no
    /// condition of it.
    pub fn optional(self) -> bool {
        self.asked_with().is_some()
    }

    /// Whether `stack` has this stage: every stage that is not
    /// [`optional`](Self::optional), and an optional one its spec asks for.
    pub fn used_by(self, stack: &ValidatedStack) -> bool {
        let migration = stack.migration.as_ref();
        match self {
            Stage::Approval => migration.is_some_and(Migration::manual_approval),
            Stage::Backup => stack.backups().is_some(),
            Stage::PostDeploy => migration.and_then(Migration::post_deploy).is_some(),
            _ => true,
        }
    }

    /// The condition as the tables show it: an optional stage's says when
    /// it is there.
    fn condition_cell(self) -> String {
        match self.asked_with() {
            Some(setting) => format!("`{}` (with `{setting}`)", self.condition()),
            None => format!("`{}`", self.condition()),
        }
    }

    /// The reason of conditions waiting on this stage.
    pub fn waiting_reason(self) -> &'static str {
        match self {
            Stage::Secrets => reasons::WAITING_FOR_SECRETS,
            Stage::Database => reasons::WAITING_FOR_DATABASE,
            Stage::Approval => reasons::WAITING_FOR_APPROVAL,
            Stage::Backup => reasons::WAITING_FOR_BACKUP,
            Stage::Migrations => reasons::WAITING_FOR_MIGRATION,
            Stage::Backend => reasons::WAITING_FOR_BACKEND,
            Stage::Frontend => reasons::WAITING_FOR_FRONTEND,
            Stage::Expose => reasons::WAITING_FOR_EXPOSURE,
            Stage::Monitoring => reasons::WAITING_FOR_MONITORING,
            Stage::PostDeploy => reasons::WAITING_FOR_POST_DEPLOY,
        }
    }

    /// The objects the stage writes, for the documentation.
    pub fn children(self) -> &'static str {
        match self {
            Stage::Secrets => {
                "Secret `<stack>-db` (managed database; created once), Secret and ConfigMap `<stack>-env`, the NetworkPolicies `<stack>-*`"
            }
            Stage::Database => {
                "StatefulSet and headless Service `<stack>-db` (managed), or the external database's URL"
            }
            Stage::Approval => "nothing: with `approval: Manual`, a new revision waits here",
            Stage::Backup => {
                "with `backup.enabled`: PersistentVolumeClaim `<stack>-backups` and Job `<stack>-backup-<hash>` (`pg_dump`), or a VolumeSnapshot `<stack>-backup-<hash>`"
            }
            Stage::Migrations => {
                "Job `<stack>-migrate-<revision>`, never patched; to roll back under `rollback: Downgrade`, Job `<stack>-down-<hash>`"
            }
            Stage::Backend => {
                "Deployment, Service and PodDisruptionBudget (replicas > 1 or unset) `<stack>-backend`"
            }
            Stage::Frontend => {
                "Deployment, Service and PodDisruptionBudget (replicas > 1 or unset) `<stack>-frontend`"
            }
            Stage::Expose => {
                "Ingress or HTTPRoute `<stack>` (with `expose`; an HTTPRoute while its API is served)"
            }
            Stage::Monitoring => "ServiceMonitor `<stack>-backend`, while its API is served",
            Stage::PostDeploy => "with `postDeploy`: Job `<stack>-post-<hash>`, never patched",
        }
    }

    /// When the stage is done, for the documentation.
    pub fn done_when(self) -> &'static str {
        match self {
            Stage::Secrets => "every referenced Secret key exists and the objects are written",
            Stage::Database => "the StatefulSet's pod is ready (`pg_isready`)",
            Stage::Approval => {
                "the target revision is `approvedRevision` (or `approval` is Automatic, or nothing migrates)"
            }
            Stage::Backup => {
                "the backup before the target revision's migration is complete (or none is asked for)"
            }
            Stage::Migrations => {
                "the database holds the target revision's schema: its Job succeeded, or the rollback guard let it be"
            }
            Stage::Backend => "every replica of the current template is available",
            Stage::Frontend => "every replica of the current template is available",
            Stage::Expose => {
                "the Ingress is written, or the Gateway accepted the HTTPRoute and resolved its Services (never blocks `Ready`)"
            }
            Stage::Monitoring => "the ServiceMonitor is written (never blocks `Ready`)",
            Stage::PostDeploy => {
                "its Job succeeded for the applied revision, run once no pod of the previous release is left and `after` passed (or no post-deploy step is set)"
            }
        }
    }
}

/// The table of stages the README and the book show, generated from
/// [`ORDER`].
pub fn markdown_table() -> String {
    let mut table =
        String::from("| # | stage | condition | writes | done when |\n|---|---|---|---|---|\n");
    for (number, stage) in ORDER.iter().enumerate() {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            number + 1,
            stage.noun(),
            stage.condition_cell(),
            stage.children(),
            stage.done_when()
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_table_is_the_order_of_the_stages() {
        let readme = include_str!("../README.md");
        assert!(
            readme.contains(&markdown_table()),
            "README.md's stage table differs from stages::ORDER; paste this:\n{}",
            markdown_table()
        );
    }

    #[test]
    fn exposure_and_monitoring_are_the_non_blocking_stages_and_only_the_post_deploy_step_follows() {
        let non_blocking: Vec<Stage> = ORDER
            .iter()
            .copied()
            .filter(|stage| !stage.blocks())
            .collect();
        assert_eq!(non_blocking, [Stage::Expose, Stage::Monitoring]);
        let first_non_blocking = ORDER.iter().position(|stage| !stage.blocks()).unwrap();
        assert_eq!(
            ORDER[first_non_blocking..],
            [Stage::Expose, Stage::Monitoring, Stage::PostDeploy],
            "what follows a non-blocking stage depends on nothing it does"
        );
    }

    #[test]
    fn the_optional_stages_are_there_only_when_the_spec_asks_for_them() {
        use crate::api::stack::tests::{example_with_migrations, from_yaml};
        let plain = from_yaml(include_str!("../deploy/examples/shop.yaml"));
        let used: Vec<Stage> = ORDER
            .iter()
            .copied()
            .filter(|stage| stage.used_by(&plain))
            .collect();
        assert_eq!(
            used,
            ORDER
                .iter()
                .copied()
                .filter(|stage| !stage.optional())
                .collect::<Vec<_>>()
        );
        let all = example_with_migrations(
            "    approval: Manual\n    backup:\n      enabled: true\n    postDeploy:\n      command: [\"alembic\", \"upgrade\", \"head\"]\n",
        );
        assert!(ORDER.iter().all(|stage| stage.used_by(&all)));
    }

    #[test]
    fn the_order_of_the_enum_is_the_order_of_the_stages() {
        let mut sorted = ORDER;
        sorted.sort();
        assert_eq!(sorted, ORDER, "Stage's derived ordering is ORDER's");
    }

    #[test]
    fn the_backup_and_approval_come_before_the_migration_they_gate() {
        let at = |stage| ORDER.iter().position(|s| *s == stage).unwrap();
        assert!(at(Stage::Database) < at(Stage::Approval));
        assert!(at(Stage::Approval) < at(Stage::Backup));
        assert!(at(Stage::Backup) < at(Stage::Migrations));
        assert!(at(Stage::Frontend) < at(Stage::PostDeploy));
    }
}
