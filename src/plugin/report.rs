//! What `kubectl appstack status` shows of one stack, gathered from the
//! API server, and how a terminal shows it.

use std::fmt::Write as _;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

use crate::api::conditions::{self, reasons, types};
use crate::api::crd::{AppStack, MigrationStatus};
use crate::children::{self, Component, LABEL_COMPONENT, LABEL_INSTANCE, MIGRATION_REVISION_LABEL};
use crate::reconcile::observe::{JobState, job_state};
use crate::reconcile::pods;
use crate::stages;

/// One stack as `kubectl appstack status` shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StackReport {
    pub name: String,
    pub namespace: String,
    pub generation: i64,
    pub observed_generation: i64,
    /// `Ready`, `Reconciling` or `Stalled`: the one that holds.
    pub state: String,
    pub reason: String,
    pub message: String,
    pub url: Option<String>,
    pub stages: Vec<StageRow>,
    pub pods: Vec<PodRow>,
    pub migration: Option<MigrationStatus>,
    /// The stack's migration Jobs, newest first.
    pub jobs: Vec<JobRow>,
    /// The failed migration's message, with what it printed.
    pub last_failure: Option<String>,
}

/// One stage and the condition reporting it.
#[derive(Clone, Debug, Serialize)]
pub struct StageRow {
    pub stage: String,
    pub condition: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// One pod of a component.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRow {
    pub component: String,
    pub name: String,
    pub phase: String,
    /// Ready containers of all, as `kubectl get pods` shows them.
    pub ready: String,
    pub restarts: i32,
    /// What keeps it from running, in the kubelet's words.
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// One migration Job.
#[derive(Clone, Debug, Serialize)]
pub struct JobRow {
    pub name: String,
    pub revision: String,
    pub state: String,
    pub created: Option<String>,
}

/// Reads stack `name` in `namespace`, its pods and its migration Jobs.
pub async fn gather(client: &Client, namespace: &str, name: &str) -> anyhow::Result<StackReport> {
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), namespace);
    let stack = stacks
        .get_opt(name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no AppStack {name:?} in namespace {namespace:?}"))?;
    let status = stack.status.clone().unwrap_or_default();
    let holding = conditions::holding(&stack);
    let summary = conditions::condition(Some(&status), holding)
        .or_else(|| conditions::condition(Some(&status), types::READY));
    // An optional stage the stack does not have reports no condition.
    let stages = stages::ORDER
        .iter()
        .filter_map(|stage| {
            let condition = conditions::condition(Some(&status), stage.condition());
            (condition.is_some() || !stage.optional()).then_some((stage, condition))
        })
        .map(|(stage, condition)| StageRow {
            stage: stage.noun().into(),
            condition: stage.condition().into(),
            status: condition.map_or("Unknown".into(), |c| c.status.clone()),
            reason: condition.map_or_else(String::new, |c| c.reason.clone()),
            message: condition.map_or_else(String::new, |c| c.message.clone()),
        })
        .collect();
    let selector = format!("{},{LABEL_INSTANCE}={name}", children::pod_selector());
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut pods: Vec<PodRow> = pod_api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .iter()
        .map(pod_row)
        .collect();
    let order = |component: &str| {
        [
            Component::Database,
            Component::Migration,
            Component::Backend,
            Component::Frontend,
        ]
        .iter()
        .position(|known| known.as_str() == component)
    };
    pods.sort_by(|a, b| (order(&a.component), &a.name).cmp(&(order(&b.component), &b.name)));
    let job_api: Api<Job> = Api::namespaced(client.clone(), namespace);
    let job_selector = format!(
        "{LABEL_INSTANCE}={name},{LABEL_COMPONENT}={}",
        Component::Migration.as_str()
    );
    let mut jobs: Vec<Job> = job_api
        .list(&ListParams::default().labels(&job_selector))
        .await?
        .items;
    jobs.sort_by_key(|job| std::cmp::Reverse(job.creation_timestamp()));
    let jobs = jobs
        .iter()
        .map(|job| JobRow {
            name: job.name_any(),
            revision: job
                .labels()
                .get(MIGRATION_REVISION_LABEL)
                .cloned()
                .unwrap_or_default(),
            state: match job_state(job) {
                JobState::Running => "Running".into(),
                JobState::Succeeded => "Succeeded".into(),
                JobState::Failed(why) => format!("Failed ({why})"),
            },
            created: job.creation_timestamp().map(|time| time.0.to_string()),
        })
        .collect();
    let last_failure = conditions::condition(Some(&status), types::MIGRATIONS_APPLIED)
        .filter(|condition| condition.reason == reasons::MIGRATION_FAILED)
        .map(|condition| condition.message.clone());
    Ok(StackReport {
        name: name.into(),
        namespace: namespace.into(),
        generation: stack.metadata.generation.unwrap_or_default(),
        observed_generation: status.observed_generation,
        state: holding.into(),
        reason: summary.map_or_else(String::new, |c| c.reason.clone()),
        message: summary.map_or_else(String::new, |c| c.message.clone()),
        url: status.url.clone(),
        stages,
        pods,
        migration: status.migration.clone(),
        jobs,
        last_failure,
    })
}

fn pod_row(pod: &Pod) -> PodRow {
    let status = pod.status.clone().unwrap_or_default();
    let containers = status.container_statuses.clone().unwrap_or_default();
    let trouble = pods::trouble(pod);
    PodRow {
        component: pod
            .labels()
            .get(LABEL_COMPONENT)
            .cloned()
            .unwrap_or_default(),
        name: pod.name_any(),
        phase: status.phase.clone().unwrap_or_else(|| "Pending".into()),
        ready: format!(
            "{}/{}",
            containers
                .iter()
                .filter(|container| container.ready)
                .count(),
            pod.spec
                .as_ref()
                .map_or(containers.len(), |spec| spec.containers.len())
        ),
        restarts: containers
            .iter()
            .map(|container| container.restart_count)
            .sum(),
        reason: trouble.as_ref().map(|trouble| trouble.reason.to_string()),
        message: trouble.map(|trouble| trouble.message),
    }
}

/// Widest a message column grows in a terminal table.
const MESSAGE_WIDTH: usize = 72;

/// The report as a terminal shows it.
pub fn text(report: &StackReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "AppStack {}/{}: {} ({}), generation {} observed {}",
        report.namespace,
        report.name,
        report.state,
        report.reason,
        report.generation,
        report.observed_generation
    );
    if !report.message.is_empty() {
        let _ = writeln!(out, "  {}", first_line(&report.message));
    }
    if let Some(url) = &report.url {
        let _ = writeln!(out, "URL: {url}");
    }
    out.push_str("\nStages\n");
    let rows: Vec<Vec<String>> = report
        .stages
        .iter()
        .enumerate()
        .map(|(index, row)| {
            vec![
                format!("{}", index + 1),
                row.stage.clone(),
                row.condition.clone(),
                row.status.clone(),
                row.reason.clone(),
                clip(first_line(&row.message)),
            ]
        })
        .collect();
    table(
        &mut out,
        &["#", "STAGE", "CONDITION", "STATUS", "REASON", "MESSAGE"],
        &rows,
    );
    out.push_str("\nPods\n");
    if report.pods.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .pods
            .iter()
            .map(|pod| {
                vec![
                    pod.component.clone(),
                    pod.name.clone(),
                    pod.phase.clone(),
                    pod.ready.clone(),
                    pod.restarts.to_string(),
                    pod.reason.clone().unwrap_or_default(),
                    clip(pod.message.as_deref().unwrap_or_default()),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "COMPONENT",
                "POD",
                "PHASE",
                "READY",
                "RESTARTS",
                "REASON",
                "MESSAGE",
            ],
            &rows,
        );
    }
    out.push_str("\nMigrations\n");
    match &report.migration {
        Some(migration) => {
            let show = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "  target revision {}, applied revision {}, schema revision {}, Job {}, attempts {}",
                show(&migration.target_revision),
                show(&migration.applied_revision),
                show(&migration.schema_revision),
                show(&migration.job_name),
                migration
                    .attempts
                    .map_or_else(|| "-".into(), |attempts| attempts.to_string())
            );
            if let Some(backup) = &migration.last_backup {
                let _ = writeln!(
                    out,
                    "  last backup {} ({}) before revision {}, schema {} (restore: kubectl appstack restore {} -n {} --backup {})",
                    backup.name,
                    backup.method,
                    backup.revision,
                    show(&backup.schema_revision),
                    report.name,
                    report.namespace,
                    backup.name
                );
            }
            for record in &migration.history {
                let _ = writeln!(
                    out,
                    "  revision {} left schema {} (image {})",
                    record.revision,
                    show(&record.schema_revision),
                    record.image
                );
            }
        }
        None => out.push_str("  none configured\n"),
    }
    if !report.jobs.is_empty() {
        let rows: Vec<Vec<String>> = report
            .jobs
            .iter()
            .map(|job| {
                vec![
                    job.name.clone(),
                    job.revision.clone(),
                    job.state.clone(),
                    job.created.clone().unwrap_or_default(),
                ]
            })
            .collect();
        table(&mut out, &["JOB", "REVISION", "STATE", "CREATED"], &rows);
    }
    if let Some(failure) = &report.last_failure {
        out.push_str("\nLast failure\n");
        for line in failure.lines() {
            let _ = writeln!(out, "  {line}");
        }
        let _ = writeln!(
            out,
            "  (run it again with: kubectl appstack retry {} -n {})",
            report.name, report.namespace
        );
    }
    out
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

fn clip(text: &str) -> String {
    if text.chars().count() <= MESSAGE_WIDTH {
        return text.to_string();
    }
    let kept: String = text.chars().take(MESSAGE_WIDTH - 1).collect();
    format!("{kept}…")
}

/// Left-aligned columns, two spaces apart, indented by two.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let mut text = String::from(" ");
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            text.push(' ');
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$} ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Sets a new `spec.migrations.retryToken` on stack `name`, whose last
/// migration failed, and returns it.
pub async fn retry(client: &Client, namespace: &str, name: &str) -> anyhow::Result<String> {
    let stacks: Api<AppStack> = Api::namespaced(client.clone(), namespace);
    let stack = stacks
        .get_opt(name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no AppStack {name:?} in namespace {namespace:?}"))?;
    if stack.spec.migrations.is_none() {
        anyhow::bail!("AppStack {name:?} has no migrations to retry");
    }
    let failed = conditions::condition(stack.status.as_ref(), types::MIGRATIONS_APPLIED)
        .is_some_and(|condition| condition.reason == reasons::MIGRATION_FAILED);
    if !failed {
        anyhow::bail!(
            "the last migration of AppStack {name:?} did not fail: nothing to retry (see kubectl appstack status {name})"
        );
    }
    let token = format!("retry-{}", k8s_openapi::jiff::Timestamp::now().as_second());
    stacks
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"resourceVersion": stack.resource_version()},
                "spec": {"migrations": {"retryToken": token}},
            })),
        )
        .await?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_migration_reads_as_stages_pods_history_and_its_output() {
        let report = StackReport {
            name: "shop".into(),
            namespace: "prod".into(),
            generation: 3,
            observed_generation: 3,
            state: "Stalled".into(),
            reason: "MigrationFailed".into(),
            message: "Job shop-migrate-1a2b failed: BackoffLimitExceeded".into(),
            url: Some("https://shop.example.com".into()),
            stages: vec![StageRow {
                stage: "migrations".into(),
                condition: "MigrationsApplied".into(),
                status: "False".into(),
                reason: "MigrationFailed".into(),
                message: "Job shop-migrate-1a2b failed".into(),
            }],
            pods: vec![PodRow {
                component: "backend".into(),
                name: "shop-backend-7d9f-abcde".into(),
                phase: "Running".into(),
                ready: "1/1".into(),
                restarts: 0,
                reason: None,
                message: None,
            }],
            migration: Some(MigrationStatus {
                target_revision: Some("1a2b".into()),
                applied_revision: Some("9f8e".into()),
                history: vec![crate::api::crd::RevisionRecord {
                    revision: "9f8e".into(),
                    schema_revision: Some("0001".into()),
                    image: "shop:1".into(),
                }],
                last_backup: Some(crate::api::crd::BackupRecord {
                    name: "shop-backup-1a2b-g4.dump".into(),
                    method: "Dump".into(),
                    revision: "1a2b".into(),
                    schema_revision: Some("0001".into()),
                }),
                ..MigrationStatus::default()
            }),
            jobs: vec![JobRow {
                name: "shop-migrate-1a2b".into(),
                revision: "1a2b".into(),
                state: "Failed (BackoffLimitExceeded)".into(),
                created: None,
            }],
            last_failure: Some(
                "Job shop-migrate-1a2b failed; the migration printed:\nrelation \"items\" does not exist"
                    .into(),
            ),
        };
        let shown = text(&report);
        assert!(
            shown.contains("  revision 9f8e left schema 0001 (image shop:1)")
                && shown.contains(
                    "  last backup shop-backup-1a2b-g4.dump (Dump) before revision 1a2b, schema 0001 (restore: kubectl appstack restore shop -n prod --backup shop-backup-1a2b-g4.dump)"
                ),
            "{shown}"
        );
        assert!(
            shown.starts_with("AppStack prod/shop: Stalled (MigrationFailed)"),
            "{shown}"
        );
        assert!(
            shown.contains("  1  migrations  MigrationsApplied  False   MigrationFailed"),
            "{shown}"
        );
        assert!(
            shown.contains("  backend    shop-backend-7d9f-abcde  Running  1/1    0"),
            "{shown}"
        );
        assert!(
            shown.contains("target revision 1a2b, applied revision 9f8e"),
            "{shown}"
        );
        assert!(
            shown.contains("  relation \"items\" does not exist"),
            "{shown}"
        );
        assert!(
            shown.contains("kubectl appstack retry shop -n prod"),
            "{shown}"
        );
    }
}
