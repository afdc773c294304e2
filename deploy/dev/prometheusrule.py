"""Write deploy/k8s/base/prometheusrule.yaml from deploy/prometheus/alerts.yaml.

    .venv/bin/python deploy/dev/prometheusrule.py

One source for the alert rules: Prometheus reads alerts.yaml (compose); the Prometheus
Operator reads the PrometheusRule (Kubernetes). tests/test_deploy.py checks they are equal.
"""

from __future__ import annotations

from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
HEADER = (
    "# The alert rules of deploy/prometheus/alerts.yaml for the Prometheus Operator; kept equal\n"
    "# by tests/test_deploy.py. Regenerate: .venv/bin/python deploy/dev/prometheusrule.py\n"
)


def render() -> str:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    document = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "blauweknop",
            "labels": {"app.kubernetes.io/name": "blauweknop-gateway"},
        },
        "spec": rules,
    }
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=100, allow_unicode=True)


if __name__ == "__main__":
    target = DEPLOY / "k8s" / "base" / "prometheusrule.yaml"
    target.write_text(render())
    print(f"wrote {target}")
