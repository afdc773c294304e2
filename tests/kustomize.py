"""Enough of `kustomize build` to check our manifests without kubectl (not installed here).

Supports what deploy/k8s uses: `resources` (files and directories), `namespace`, `labels`
(pairs, without selectors), `patches` with a `path` (strategic merge by kind and name: maps
merge, lists of maps merge by `name`), and `images` (newName/newTag). Anything else in a
kustomization is refused, so a manifest using more cannot silently go unchecked.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]
_SUPPORTED = {"apiVersion", "kind", "namespace", "labels", "resources", "patches", "images"}
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ClusterSecretStore"}


def load_documents(path: Path) -> list[Resource]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def build(directory: Path) -> list[Resource]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _SUPPORTED
    if unknown:
        raise ValueError(f"{directory}: kustomization fields this checker does not know: {unknown}")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            resources += build(target)
        elif target.is_file():
            resources += load_documents(target)
        else:
            raise FileNotFoundError(
                f"{directory}/kustomization.yaml names {entry}, which is missing"
            )
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise ValueError(f"only `path` patches are supported, not {patch}")
        for document in load_documents(directory / patch["path"]):
            target = find(resources, document["kind"], document["metadata"]["name"])
            merged = strategic_merge(target, document)
            resources[resources.index(target)] = merged
    for label in kustomization.get("labels", []):
        if label.get("includeSelectors"):
            raise ValueError("labels with includeSelectors are not supported")
        for resource in resources:
            resource.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    if "namespace" in kustomization:
        for resource in resources:
            if resource["kind"] not in _CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        for container in containers(resources):
            name, _, _ = container["image"].partition(":")
            if name == image["name"]:
                new = image.get("newName", name)
                container["image"] = f"{new}:{image['newTag']}" if "newTag" in image else new
    return resources


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    for resource in resources:
        if resource["kind"] == kind and resource["metadata"]["name"] == name:
            return resource
    raise KeyError(f"no {kind} named {name}")


def containers(resources: list[Resource]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for resource in resources:
        spec = pod_spec(resource)
        if spec is not None:
            found += spec.get("containers", []) + spec.get("initContainers", [])
    return found


def pod_spec(resource: Resource) -> dict[str, Any] | None:
    if resource["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        spec: dict[str, Any] = resource["spec"]["template"]["spec"]
        return spec
    return None


def strategic_merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value) if key in base else value
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        merged_list = copy.deepcopy(base)
        for item in patch:
            names = [m["name"] for m in merged_list]
            if item["name"] in names:
                index = names.index(item["name"])
                merged_list[index] = strategic_merge(merged_list[index], item)
            else:
                merged_list.append(item)
        return merged_list
    return copy.deepcopy(patch)
