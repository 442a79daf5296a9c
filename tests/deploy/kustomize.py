"""A small Kustomize renderer for the tests (no kubectl or kustomize binary here: Debian
bookworm packages neither, PyPI has no kustomize, and there is no Go toolchain to build it).

It implements only what deploy/k8s uses, and refuses any other kustomization field or patch
form, so a feature added to the manifests cannot be silently ignored by the test:

- `resources` (files and directories with their own kustomization, rendered first);
- `labels` with `pairs` (metadata labels only, as kustomize does without includeSelectors);
- `patches` given by `path`, one object per file: strategic-merge patches matched by kind
  and name, where lists of named objects (containers, env, volumes, ...) merge by `name`
  and other lists replace;
- `namespace` (set on every namespaced object) and `images` (newName / newTag).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "labels", "patches", "namespace", "images"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}


class Unsupported(ValueError):
    pass


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def build(directory: Path) -> list[dict]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise Unsupported(f"{directory}: kustomization fields the test renderer does not implement: {sorted(unknown)}")
    docs: list[dict] = []
    for entry in spec.get("resources", []):
        target = directory / entry
        docs.extend(build(target) if target.is_dir() else load_docs(target))
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise Unsupported(f"{directory}: only `patches: - path:` (strategic merge) is implemented: {patch}")
        pieces = load_docs(directory / patch["path"])
        if len(pieces) != 1:
            raise Unsupported(f"{patch['path']}: one object per patch file (kustomize's safe subset)")
        for piece in pieces:
            matches = [d for d in docs if d["kind"] == piece["kind"] and d["metadata"]["name"] == piece["metadata"]["name"]]
            if len(matches) != 1:
                raise Unsupported(f"patch {patch['path']}: {piece['kind']}/{piece['metadata']['name']} matches {len(matches)} objects")
            merge(matches[0], piece)
    for label in spec.get("labels", []):
        if set(label) - {"pairs"}:
            raise Unsupported(f"labels: only `pairs` is implemented: {label}")
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    if "namespace" in spec:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = spec["namespace"]
    for image in spec.get("images", []):
        for container in containers(docs):
            name, tag = split_image(container["image"])
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    return docs


def merge(target: dict, patch: dict) -> None:
    for key, value in patch.items():
        if key.startswith("$"):
            raise Unsupported(f"strategic-merge directive {key} is not implemented")
        current = target.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merge(current, value)
        elif isinstance(value, list) and isinstance(current, list) and _named(value) and _named(current):
            by_name = {item["name"]: item for item in current}
            for item in value:
                if item["name"] in by_name:
                    merge(by_name[item["name"]], item)
                else:
                    current.append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def containers(docs: list[dict]):
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        yield from pod.get("initContainers", [])
        yield from pod.get("containers", [])


def split_image(image: str) -> tuple[str, str]:
    # registry:port/name:tag -> the tag is after the last colon that follows the last slash
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, "latest"
