{{/* Names and labels. */}}
{{- define "landmark.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "landmark.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "landmark.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "landmark.labels" -}}
{{ include "landmark.commonLabels" . }}
app.kubernetes.io/name: {{ include "landmark.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selector labels of one component: include "landmark.selector" (list . "worker") */}}
{{- define "landmark.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "landmark.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "landmark.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "landmark.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image of a component: include "landmark.image" (list . .Values.worker.gpu.enabled) */}}
{{- define "landmark.image" -}}
{{- $root := index . 0 -}}
{{- $variant := ternary "gpu" "cpu" (index . 1) -}}
{{- printf "%s:%s-%s" $root.Values.image.repository (default $root.Chart.AppVersion $root.Values.image.tag) $variant -}}
{{- end -}}

{{- define "landmark.modelsClaim" -}}
{{- default (printf "%s-models" (include "landmark.fullname" .)) .Values.models.existingClaim -}}
{{- end -}}

{{/* Where the trainer writes its run, and the export inside it that the others read. */}}
{{- define "landmark.runDir" -}}
{{- printf "%s/%s" .Values.models.mountPath .Values.models.run -}}
{{- end -}}
{{- define "landmark.exportDir" -}}
{{- printf "%s/model" (include "landmark.runDir" .) -}}
{{- end -}}

{{/* The Kafka connection every Kafka client container gets (variables of configuration/kafka.py). */}}
{{- define "landmark.kafkaConfig" -}}
LANDMARK_KAFKA_BOOTSTRAP: {{ .Values.kafka.bootstrapServers | quote }}
LANDMARK_KAFKA_SECURITY_PROTOCOL: {{ .Values.kafka.securityProtocol | quote }}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}
LANDMARK_KAFKA_SASL_MECHANISM: {{ .Values.kafka.saslMechanism | quote }}
{{- end }}
{{- if and (hasSuffix "SSL" .Values.kafka.securityProtocol) .Values.kafka.tlsSecret.name }}
LANDMARK_KAFKA_CA_FILE: "/var/run/secrets/landmark/kafka-tls/ca.crt"
{{- if .Values.kafka.tlsSecret.certKey }}
LANDMARK_KAFKA_CERT_FILE: "/var/run/secrets/landmark/kafka-tls/tls.crt"
LANDMARK_KAFKA_KEY_FILE: "/var/run/secrets/landmark/kafka-tls/tls.key"
{{- end }}
LANDMARK_KAFKA_CHECK_HOSTNAME: {{ .Values.kafka.checkHostname | quote }}
{{- end }}
{{- end -}}

{{/* Secrets as files (the settings' *_FILE variables) or references: never their values. */}}
{{- define "landmark.kafkaSecretEnv" -}}
{{- if and (hasPrefix "SASL_" .Values.kafka.securityProtocol) .Values.kafka.credentialsSecret.name }}
- name: LANDMARK_KAFKA_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.credentialsSecret.name }}
      key: {{ .Values.kafka.credentialsSecret.usernameKey }}
- name: LANDMARK_KAFKA_PASSWORD_FILE
  value: /var/run/secrets/landmark/kafka-credentials/password
{{- end }}
{{- end -}}

{{- define "landmark.milvusSecretEnv" -}}
{{- if .Values.milvus.tokenSecret.name }}
- name: LANDMARK_MILVUS_TOKEN_FILE
  value: /var/run/secrets/landmark/milvus/token
{{- end }}
{{- end -}}

{{- define "landmark.secretVolumeMounts" -}}
{{- $kafka := index . 1 -}}
{{- with index . 0 }}
{{- if and $kafka (hasPrefix "SASL_" .Values.kafka.securityProtocol) .Values.kafka.credentialsSecret.name }}
- name: kafka-credentials
  mountPath: /var/run/secrets/landmark/kafka-credentials
  readOnly: true
{{- end }}
{{- if and $kafka (hasSuffix "SSL" .Values.kafka.securityProtocol) .Values.kafka.tlsSecret.name }}
- name: kafka-tls
  mountPath: /var/run/secrets/landmark/kafka-tls
  readOnly: true
{{- end }}
{{- if .Values.milvus.tokenSecret.name }}
- name: milvus-token
  mountPath: /var/run/secrets/landmark/milvus
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{- define "landmark.secretVolumes" -}}
{{- $kafka := index . 1 -}}
{{- with index . 0 }}
{{- if and $kafka (hasPrefix "SASL_" .Values.kafka.securityProtocol) .Values.kafka.credentialsSecret.name }}
- name: kafka-credentials
  secret:
    secretName: {{ .Values.kafka.credentialsSecret.name }}
    defaultMode: 0440
    items:
      - key: {{ .Values.kafka.credentialsSecret.passwordKey }}
        path: password
{{- end }}
{{- if and $kafka (hasSuffix "SSL" .Values.kafka.securityProtocol) .Values.kafka.tlsSecret.name }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tlsSecret.name }}
    defaultMode: 0440
    items:
      - key: {{ .Values.kafka.tlsSecret.caKey }}
        path: ca.crt
      {{- if .Values.kafka.tlsSecret.certKey }}
      - key: {{ .Values.kafka.tlsSecret.certKey }}
        path: tls.crt
      - key: {{ .Values.kafka.tlsSecret.keyKey | required "kafka.tlsSecret.keyKey is required with certKey" }}
        path: tls.key
      {{- end }}
{{- end }}
{{- if .Values.milvus.tokenSecret.name }}
- name: milvus-token
  secret:
    secretName: {{ .Values.milvus.tokenSecret.name }}
    defaultMode: 0440
    items:
      - key: {{ .Values.milvus.tokenSecret.key }}
        path: token
{{- end }}
{{- end }}
{{- end -}}

{{/* Writable scratch space under a read-only root file system (Keras, matplotlib, XLA). */}}
{{- define "landmark.scratchEnv" -}}
- name: HOME
  value: /tmp
- name: KERAS_HOME
  value: /tmp/keras
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
{{- end -}}

{{/* Checks that fail the rendering with a message instead of deploying something broken. */}}
{{- define "landmark.checks" -}}
{{- if and .Values.keda.enabled (gt (int .Values.keda.maxReplicaCount) (int .Values.kafka.topics.imagesPartitions)) -}}
{{- fail (printf "keda.maxReplicaCount (%v) exceeds kafka.topics.imagesPartitions (%v): a worker beyond the partition count owns no partition" .Values.keda.maxReplicaCount .Values.kafka.topics.imagesPartitions) -}}
{{- end -}}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) -}}
{{- fail "keda.minReplicaCount exceeds keda.maxReplicaCount" -}}
{{- end -}}
{{- $batch := add (int .Values.worker.referenceTimeoutS) (mul 3 (int .Values.worker.publishTimeoutS)) (int .Values.worker.graceMarginSeconds) -}}
{{- if le (int .Values.worker.terminationGracePeriodSeconds) (int $batch) -}}
{{- fail (printf "worker.terminationGracePeriodSeconds (%v) must exceed the longest batch plus its commit: referenceTimeoutS + 3 x publishTimeoutS + graceMarginSeconds = %v" .Values.worker.terminationGracePeriodSeconds $batch) -}}
{{- end -}}
{{- if not (has .Values.worker.gpu.decoder (list "cpu" "gpu")) -}}
{{- fail (printf "worker.gpu.decoder must be cpu or gpu, not %q" (toString .Values.worker.gpu.decoder)) -}}
{{- end -}}
{{- if and (eq .Values.worker.gpu.decoder "gpu") (not .Values.worker.gpu.enabled) -}}
{{- fail "worker.gpu.decoder=gpu needs worker.gpu.enabled=true (the -gpu image and a GPU)" -}}
{{- end -}}
{{- if not (has .Values.kafka.securityProtocol (list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL")) -}}
{{- fail "kafka.securityProtocol must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL" -}}
{{- end -}}
{{- if and (hasPrefix "SASL_" .Values.kafka.securityProtocol) (not .Values.kafka.credentialsSecret.name) -}}
{{- fail "kafka.credentialsSecret.name is required for SASL_PLAINTEXT and SASL_SSL" -}}
{{- end -}}
{{- end -}}
