#!/usr/bin/env bash
# Builds vipr's image from /vipr (the rsynced repository) with buildah, from the Dockerfile,
# and imports it into containerd's k8s.io namespace as docker.io/library/vipr:dev (what the
# DaemonSet's `vipr:dev` means to kubelet). Writes the image archive to $1 for the workers.
# Base images come from Docker Hub anonymously; no registry login is involved.
set -euo pipefail
archive=${1:?usage: build-image.sh ARCHIVE}
mkdir -p "$(dirname "$archive")"
buildah --storage-driver vfs bud --layers -q -t localhost/vipr:dev -f /vipr/Dockerfile /vipr
rm -f "$archive"
buildah --storage-driver vfs push -q localhost/vipr:dev "docker-archive:${archive}:docker.io/library/vipr:dev"
ctr -n k8s.io images import "$archive" >/dev/null
echo "build-image: vipr:dev built and imported ($(du -h "$archive" | cut -f1))"
