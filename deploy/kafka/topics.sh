#!/usr/bin/env bash
# Create (or bring up to date) the two audit topics on an Apache Kafka cluster.
#
#   BOOTSTRAP=kafka-1.example:9093 COMMAND_CONFIG=admin-tls.properties deploy/kafka/topics.sh
#
# Needs Apache Kafka's kafka-topics.sh and kafka-configs.sh on PATH (or KAFKA_BIN=/opt/kafka/bin).
# Idempotent: an existing topic keeps its data and gets the settings below; a topic with more
# than one partition is refused, since the Merkle log's leaf order is the partition's order.
# Why each value: README.md in this folder.
set -euo pipefail

: "${BOOTSTRAP:?set BOOTSTRAP=host:port of the Kafka cluster}"
KAFKA_BIN="${KAFKA_BIN:-}"
RETENTION_DAYS="${RETENTION_DAYS:-2557}"       # 7 years (7 × 365.25 days); see README.md
MAX_MESSAGE_BYTES="${MAX_MESSAGE_BYTES:-8454144}" # 8 MiB + 64 KiB; relay batches ≤ 8 MiB
REPLICATION="${REPLICATION:-3}"
MIN_INSYNC="${MIN_INSYNC:-2}"

topics_cmd="${KAFKA_BIN:+$KAFKA_BIN/}kafka-topics.sh"
configs_cmd="${KAFKA_BIN:+$KAFKA_BIN/}kafka-configs.sh"
admin=(--bootstrap-server "$BOOTSTRAP")
[ -n "${COMMAND_CONFIG:-}" ] && admin+=(--command-config "$COMMAND_CONFIG")

retention_ms=$((RETENTION_DAYS * 24 * 60 * 60 * 1000))
settings=(
  "cleanup.policy=delete"            # never compact: compaction keeps one event per key
  "retention.ms=$retention_ms"
  "retention.bytes=-1"               # time decides, never size
  "min.insync.replicas=$MIN_INSYNC"
  "max.message.bytes=$MAX_MESSAGE_BYTES"
  "unclean.leader.election.enable=false"
  "message.timestamp.type=CreateTime"
)

for topic in blauweknop.audit.v1 blauweknop.audit.checkpoints.v1; do
  if "$topics_cmd" "${admin[@]}" --describe --topic "$topic" >/dev/null 2>&1; then
    partitions=$("$topics_cmd" "${admin[@]}" --describe --topic "$topic" \
      | grep -c "Partition: " || true)
    if [ "$partitions" != "1" ]; then
      echo "topic $topic has $partitions partitions; the audit log needs exactly one" >&2
      exit 1
    fi
    joined=$(IFS=,; echo "${settings[*]}")
    "$configs_cmd" "${admin[@]}" --alter --entity-type topics --entity-name "$topic" \
      --add-config "$joined"
    echo "updated $topic"
  else
    args=()
    for s in "${settings[@]}"; do args+=(--config "$s"); done
    "$topics_cmd" "${admin[@]}" --create --if-not-exists --topic "$topic" --partitions 1 \
      --replication-factor "$REPLICATION" "${args[@]}"
    echo "created $topic"
  fi
done
