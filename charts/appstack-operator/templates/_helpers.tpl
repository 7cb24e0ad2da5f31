{{/* The release's base name: the chart name, prefixed by the release name
unless that already contains it. */}}
{{- define "appstack-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the operator pods; never a version. */}}
{{- define "appstack-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object of the release. */}}
{{- define "appstack-operator.labels" -}}
{{ include "appstack-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: appstack-operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The operator image: repository@digest when a digest is set, else
repository:tag with the tag defaulting to appVersion. */}}
{{- define "appstack-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The metrics Service's name, which is also the `job` label Prometheus
gives the operator's series through the ServiceMonitor. */}}
{{- define "appstack-operator.metricsService" -}}
{{- printf "%s-metrics" (include "appstack-operator.fullname" .) -}}
{{- end -}}

{{/* The PromQL selector of this release's operator series. */}}
{{- define "appstack-operator.jobSelector" -}}
job="{{ include "appstack-operator.metricsService" . }}", namespace="{{ .Release.Namespace }}"
{{- end -}}

{{/* Whether the cluster serves the Prometheus Operator's kind (list: the
root context, the kind). Each kind has its own CRD, so one may be served
without the other. */}}
{{- define "appstack-operator.monitoringServed" -}}
{{- $root := index . 0 -}}
{{- if $root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" (index . 1)) -}}true{{- end -}}
{{- end -}}

{{/* What the operator does to an AppStack's children, the same in a
ClusterRole (all namespaces) and in each watched namespace's Role. Every
rule says why. */}}
{{- define "appstack-operator.rules" -}}
# The operator's own resource: it watches AppStacks (list + watch fill its
# cache; it never reads one by name).
- apiGroups: [appstack.dev]
  resources: [appstacks]
  verbs: [list, watch]
# With deletionPolicy: Delete it adds the appstack.dev/delete-database
# finalizer and removes it once it has seen the stack being deleted, so no
# reconcile recreates the database after its volume was released. A JSON
# patch of metadata.finalizers, never of the spec.
- apiGroups: [appstack.dev]
  resources: [appstacks]
  verbs: [patch]
# It reports progress in each AppStack's status subresource (conditions,
# observedGeneration, migration) with merge patches.
- apiGroups: [appstack.dev]
  resources: [appstacks/status]
  verbs: [patch]
# Children carry a controller ownerReference with blockOwnerDeletion; where
# the OwnerReferencesPermissionEnforcement admission plugin runs, setting it
# takes update on the owner's finalizers.
- apiGroups: [appstack.dev]
  resources: [appstacks/finalizers]
  verbs: [update]
# Secrets: the generated credentials (<stack>-db, created once), <stack>-env
# (server-side applied; a patch that creates an object needs create too),
# and the users' Secrets an AppStack references. Watched whole into a cache,
# since users' Secrets carry no label of ours (the cache keeps the data of
# referenced ones only); read by name before generating a value, so one that
# exists is never generated again, and when a create finds one in place;
# ownerReferences patched as deletionPolicy changes; deleted when a changed
# spec no longer wants them.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, delete]
# ConfigMaps (plain env) and Services (one per component): watched
# (label-filtered) into caches to notice drift, written by server-side
# apply, deleted when a changed spec no longer wants them.
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [list, watch, create, patch, delete]
# Workload children: the database StatefulSet and the backend and frontend
# Deployments, managed the same way.
- apiGroups: [apps]
  resources: [statefulsets, deployments]
  verbs: [list, watch, create, patch, delete]
# The managed database's volume, which the StatefulSet creates, and the
# volume of the backups (<stack>-backups, with migrations.backup): watched
# (label-filtered) into a cache, read by name when a stack is deleted (or a
# create finds the backups volume in place), the backups volume created, and
# both patched only to add or remove the AppStack's ownerReference so that
# deletionPolicy decides whether they outlive the stack. Never deleted by
# the operator.
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, list, watch, create, patch]
# The pods of the stacks' workloads, watched (label-filtered) into a cache so
# a component's condition says why its pods cannot run (an image that cannot
# be pulled, a crash loop, a config error) and a failed migration what it
# printed. Never written.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# The Jobs of the migrations: each revision's migration
# (<stack>-migrate-<hash>), the backup before it (<stack>-backup-<hash>), a
# rollback's downgrade (<stack>-down-<hash>) and the post-deploy step
# (<stack>-post-<hash>): created (and read by name when a create finds one
# in place), watched until they succeed or fail, deleted once superseded or
# when a finished one no longer describes the database (to run it again).
# Never patched: a new revision is a new Job.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
# The backend's ServiceMonitor, when the AppStack asks for one and the
# Prometheus Operator's API is served: managed like the other children.
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [list, watch, create, patch, delete]
# Each stack's NetworkPolicies (<stack>-default-deny and one per component)
# and, with spec.expose, its Ingress: watched (label-filtered) into caches,
# server-side applied, deleted when networkPolicy.enabled is false, a
# component goes, or expose is removed or moves to a gateway.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies, ingresses]
  verbs: [list, watch, create, patch, delete]
# A PodDisruptionBudget for the backend and the frontend while they run more
# than one replica, managed the same way.
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch, delete]
# The HTTPRoute of spec.expose.gateway, while the Gateway API is served,
# managed the same way. Its status, the gateway controller's, is only read
# (through the watch) into ExposeReady.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [list, watch, create, patch, delete]
# With migrations.backup.method: Snapshot, the VolumeSnapshot of the
# database's volume taken before each migration, while the CSI snapshot API
# is served: created, watched (label-filtered) until ready to use, deleted
# beyond backup.keep. Never patched.
- apiGroups: [snapshot.storage.k8s.io]
  resources: [volumesnapshots]
  verbs: [list, watch, create, delete]
# Events about each AppStack (steps, errors), through events.k8s.io; the
# recorder patches a repeated Event to bump its count.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/* The Helm-only metadata of the CRD template (labels, and the keep
policy while crds.keep), rendered by one line so the rest of the template
stays exactly crds/appstack.dev_appstacks.yaml. */}}
{{- define "appstack-operator.crdMetadata" -}}
labels:
  {{- include "appstack-operator.labels" . | nindent 2 }}
{{- if .Values.crds.keep }}
annotations:
  # Uninstalling the chart never deletes the CRD, which would delete every
  # AppStack and, through garbage collection, every stack's children.
  helm.sh/resource-policy: keep
{{- end }}
{{- end -}}
