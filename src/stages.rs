//! The order of the stack, written once. The controller walks these stages
//! in order and stops at the first blocking one that is not done; `appstack
//! render` prints children in this order; the status has one component
//! condition per stage; the tables of the README and of the stages page of
//! the book are generated from it.

use crate::api::conditions::{reasons, types};

/// One step of bringing a stack up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Secrets,
    Database,
    Migrations,
    Backend,
    Frontend,
    Expose,
    Monitoring,
}

/// Every stage, in the order the stack comes up.
pub const ORDER: [Stage; 7] = [
    Stage::Secrets,
    Stage::Database,
    Stage::Migrations,
    Stage::Backend,
    Stage::Frontend,
    Stage::Expose,
    Stage::Monitoring,
];

impl Stage {
    /// The component condition reporting this stage.
    pub fn condition(self) -> &'static str {
        match self {
            Stage::Secrets => types::SECRETS_READY,
            Stage::Database => types::DATABASE_READY,
            Stage::Migrations => types::MIGRATIONS_APPLIED,
            Stage::Backend => types::BACKEND_AVAILABLE,
            Stage::Frontend => types::FRONTEND_AVAILABLE,
            Stage::Expose => types::EXPOSE_READY,
            Stage::Monitoring => types::MONITORING_READY,
        }
    }

    /// What the stage brings up, as a sentence would name it.
    pub fn noun(self) -> &'static str {
        match self {
            Stage::Secrets => "secrets",
            Stage::Database => "the database",
            Stage::Migrations => "migrations",
            Stage::Backend => "the backend",
            Stage::Frontend => "the frontend",
            Stage::Expose => "exposure",
            Stage::Monitoring => "monitoring",
        }
    }

    /// Whether the stack can be Ready without this stage done, and whether
    /// the stages after it wait for it. Exposure and monitoring depend on
    /// what the cluster has installed (an ingress controller, a gateway, the
    /// Prometheus Operator) more than on the stack: they report, and never
    /// hold the stack back.
    pub fn blocks(self) -> bool {
        !matches!(self, Stage::Expose | Stage::Monitoring)
    }

    /// The reason of conditions waiting on this stage.
    pub fn waiting_reason(self) -> &'static str {
        match self {
            Stage::Secrets => reasons::WAITING_FOR_SECRETS,
            Stage::Database => reasons::WAITING_FOR_DATABASE,
            Stage::Migrations => reasons::WAITING_FOR_MIGRATION,
            Stage::Backend => reasons::WAITING_FOR_BACKEND,
            Stage::Frontend => reasons::WAITING_FOR_FRONTEND,
            Stage::Expose => reasons::WAITING_FOR_EXPOSURE,
            Stage::Monitoring => reasons::WAITING_FOR_MONITORING,
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
            Stage::Migrations => "Job `<stack>-migrate-<revision>`, never patched",
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
        }
    }

    /// When the stage is done, for the documentation.
    pub fn done_when(self) -> &'static str {
        match self {
            Stage::Secrets => "every referenced Secret key exists and the objects are written",
            Stage::Database => "the StatefulSet's pod is ready (`pg_isready`)",
            Stage::Migrations => "the target revision's Job succeeded (or no migrations are set)",
            Stage::Backend => "every replica of the current template is available",
            Stage::Frontend => "every replica of the current template is available",
            Stage::Expose => {
                "the Ingress is written, or the Gateway accepted the HTTPRoute and resolved its Services (never blocks `Ready`)"
            }
            Stage::Monitoring => "the ServiceMonitor is written (never blocks `Ready`)",
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
            "| {} | {} | `{}` | {} | {} |\n",
            number + 1,
            stage.noun(),
            stage.condition(),
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
    fn exposure_and_monitoring_are_non_blocking_and_come_last() {
        let first_non_blocking = ORDER.iter().position(|stage| !stage.blocks()).unwrap();
        assert_eq!(
            ORDER[first_non_blocking..],
            [Stage::Expose, Stage::Monitoring],
            "a non-blocking stage before a blocking one would let it be skipped"
        );
    }
}
