{{/*
Names and labels. Nothing here is random, dated or looked up in the cluster: the same values
render the same bytes (GitOps tools see no drift).
*/}}

{{/* The default name, the one deploy/ uses (and the operator's default Lease name). */}}
{{- define "nvt.name" -}}
navigator-token-operator
{{- end }}

{{/* Object names: the release name when it contains the chart's name, else <release>-<name>. */}}
{{- define "nvt.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride -}}
{{- else if contains (include "nvt.name" .) .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "nvt.name" .) | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{/*
Selector labels (immutable on a Deployment). A release named navigator-token-operator selects
exactly as deploy/ does; any other release also by its name, so that two releases never select
each other's pods.
*/}}
{{- define "nvt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nvt.name" . }}
{{- if ne .Release.Name (include "nvt.name" .) }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- end }}

{{/*
Labels of every object: those of deploy/, the usual Helm ones (helm.sh/chart,
app.kubernetes.io/instance, managed-by and version: the only labels .ci/helm_checks.py allows
the chart to add to what deploy/ renders), then commonLabels (the schema keeps them off these
keys). Called with (list $ EXTRA), EXTRA a dict of labels for one object.
*/}}
{{- define "nvt.labels" -}}
{{- $ctx := index . 0 -}}
{{- $labels := dict
  "app.kubernetes.io/name" (include "nvt.name" $ctx)
  "app.kubernetes.io/part-of" (include "nvt.name" $ctx)
  "app.kubernetes.io/instance" $ctx.Release.Name
  "app.kubernetes.io/managed-by" $ctx.Release.Service
  "app.kubernetes.io/version" ($ctx.Chart.AppVersion | toString)
  "helm.sh/chart" (printf "%s-%s" $ctx.Chart.Name $ctx.Chart.Version | replace "+" "_")
-}}
{{- toYaml (merge $labels (deepCopy (index . 1)) (deepCopy $ctx.Values.commonLabels)) }}
{{- end }}

{{/*
Labels of the pod template: those of deploy/ (and the selector's), then podLabels and
commonLabels; no Helm labels, so that neither a new chart version nor taking over a kustomize
install rolls the pods.
*/}}
{{- define "nvt.podLabels" -}}
{{- $labels := include "nvt.selectorLabels" . | fromYaml -}}
{{- $_ := set $labels "app.kubernetes.io/part-of" (include "nvt.name" .) -}}
{{- toYaml (merge $labels (deepCopy .Values.podLabels) (deepCopy .Values.commonLabels)) }}
{{- end }}

{{/* metadata.labels and, when there are any, metadata.annotations. Called with (list $ EXTRA). */}}
{{- define "nvt.metadata" -}}
labels:
  {{- include "nvt.labels" . | nindent 2 }}
{{- with (index . 0).Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The Lease's name: the operator's default for the default name, else the object name. */}}
{{- define "nvt.leaseName" -}}
{{- include "nvt.fullname" . -}}
{{- end }}

{{/* The image reference: repository@digest, else repository:tag (default: appVersion). */}}
{{- define "nvt.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default (.Chart.AppVersion | toString) .Values.image.tag) -}}
{{- end -}}
{{- end }}

{{/* True (non-empty) in ClusterWide mode. */}}
{{- define "nvt.clusterWide" -}}
{{- if eq .Values.installMode "ClusterWide" }}true{{ end -}}
{{- end }}

{{/*
Rules the ClusterRole (deploy/clusterrole.yaml) and the Roles of Namespaced mode
(deploy/overlays/namespaced/watched-namespaces-rbac.yaml) share, and the opt-in one of
deploy/components/rollout-restart/.
*/}}
{{- define "nvt.rules.navigatorTokens" -}}
- apiGroups: ["navigator.dev"]
  resources: ["navigatortokens"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["navigator.dev"]
  resources: ["navigatortokens/status"]
  verbs: ["patch"]
{{- end }}
{{- define "nvt.rules.secrets" -}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
{{- end }}
{{- define "nvt.rules.events" -}}
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
{{- define "nvt.rules.rolloutRestart" -}}
{{- if .Values.rolloutRestart.enabled }}
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["patch"]
{{- end }}
{{- end }}
