{{/* The ConfigMap data of each command (the worker's, the trainer's, the gallery loader's):
     LANDMARK_* variables the chart sets from its values. A component's extraEnv comes after them
     (landmark.extraEnv), never naming one of them. */}}
{{- define "landmark.workerConfig" -}}
{{ include "landmark.kafkaConfig" . }}
LANDMARK_MODEL_DIR: {{ include "landmark.exportDir" . | quote }}
LANDMARK_IMAGES_TOPIC: {{ .Values.kafka.topics.images | quote }}
LANDMARK_TAGS_TOPIC: {{ .Values.kafka.topics.tags | quote }}
LANDMARK_DLQ_TOPIC: {{ .Values.kafka.topics.deadLetter | quote }}
LANDMARK_GROUP_ID: {{ .Values.worker.groupId | quote }}
LANDMARK_DELIVERY: {{ .Values.worker.delivery | quote }}
LANDMARK_BATCH_MAX_RECORDS: {{ .Values.worker.batchMaxRecords | quote }}
LANDMARK_BATCH_MAX_WAIT_MS: {{ .Values.worker.batchMaxWaitMs | quote }}
LANDMARK_PUBLISH_TIMEOUT_S: {{ .Values.worker.publishTimeoutS | quote }}
LANDMARK_REFERENCE_TIMEOUT_S: {{ .Values.worker.referenceTimeoutS | quote }}
LANDMARK_REFERENCE_KEEP_ALIVE: {{ .Values.worker.referenceKeepAlive | quote }}
LANDMARK_DECODER: {{ .Values.worker.gpu.decoder | quote }}
{{- with .Values.worker.referenceOrigins }}
LANDMARK_REFERENCE_ORIGINS: {{ . | quote }}
{{- end }}
LANDMARK_HTTP_HOST: "0.0.0.0"
LANDMARK_HTTP_PORT: {{ .Values.worker.httpPort | quote }}
LANDMARK_MILVUS_URI: {{ .Values.milvus.uri | quote }}
LANDMARK_GALLERY_ALIAS: {{ .Values.milvus.galleryAlias | quote }}
LANDMARK_LOG_LEVEL: {{ .Values.worker.logLevel | quote }}
LANDMARK_LOG_FORMAT: "json"
{{- end -}}

{{/* The worker container's env: its pod name, and secrets as files or references. */}}
{{- define "landmark.workerEnv" -}}
# The pod name: unique in the group and the same name in logs, tags and metrics.
- name: LANDMARK_WORKER_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- include "landmark.kafkaSecretEnv" . | nindent 0 }}
{{- include "landmark.milvusSecretEnv" . | nindent 0 }}
{{- include "landmark.scratchEnv" . | nindent 0 }}
{{- end -}}

{{- define "landmark.trainerConfig" -}}
LANDMARK_DATA_DIR: {{ printf "%s/%s" .Values.data.mountPath .Values.data.subPath | quote }}
LANDMARK_OUTPUT: {{ include "landmark.runDir" . | quote }}
LANDMARK_CACHE_DIR: "/var/lib/landmark/cache"
{{- end -}}

{{- define "landmark.galleryConfig" -}}
LANDMARK_DATA_DIR: {{ printf "%s/%s" .Values.data.mountPath .Values.data.subPath | quote }}
LANDMARK_MODEL_DIR: {{ include "landmark.exportDir" . | quote }}
LANDMARK_MILVUS_URI: {{ .Values.milvus.uri | quote }}
LANDMARK_GALLERY_ALIAS: {{ .Values.milvus.galleryAlias | quote }}
{{- with .Values.galleryLoad.cap }}
LANDMARK_GALLERY_CAP: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* A component's extraEnv as ConfigMap lines. Args: the extraEnv map, its path in the values,
     the ConfigMap data the chart renders for the component, and the env entries of its pod (YAML).
     A variable the chart already sets is refused: as a repeated ConfigMap key the API server
     would refuse the object with a message naming no value, and in the pod's env it would
     silently win over the ConfigMap. */}}
{{- define "landmark.extraEnv" -}}
{{- $path := index . 1 -}}
{{- $taken := keys (fromYaml (index . 2)) -}}
{{- range fromYamlArray (index . 3) -}}
{{- $taken = append $taken .name -}}
{{- end -}}
{{- range $name, $value := index . 0 }}
{{- if has $name $taken }}
{{- fail (printf "%s.%s: the chart sets %s itself (from one of its values, or as a secret): set it there instead" $path $name $name) }}
{{- end }}
{{ $name }}: {{ $value | quote }}
{{- end }}
{{- end -}}
