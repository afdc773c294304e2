#!/usr/bin/env bash
# Creates the audit topics of deploy/compose.yaml, as deploy/k8s/base/kafka-topics.yaml declares
# them for Strimzi (tests/test_deploy.py checks that both agree).
set -euo pipefail
topics=/opt/kafka/bin/kafka-topics.sh
# Events: one partition (one total order for the Merkle log), three replicas, two in sync for
# every write, never compacted, kept forever, room for the largest document.
"$topics" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
  --topic blauweknop.audit.v1 --partitions 1 --replication-factor 3 \
  --config min.insync.replicas=2 --config cleanup.policy=delete --config retention.ms=-1 \
  --config retention.bytes=-1 --config max.message.bytes=16777216 \
  --config unclean.leader.election.enable=false
"$topics" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
  --topic blauweknop.audit.checkpoints.v1 --partitions 1 --replication-factor 3 \
  --config min.insync.replicas=2 --config cleanup.policy=delete --config retention.ms=-1 \
  --config retention.bytes=-1 --config max.message.bytes=1048576 \
  --config unclean.leader.election.enable=false
"$topics" --bootstrap-server "$BOOTSTRAP" --describe --topic blauweknop.audit.v1
