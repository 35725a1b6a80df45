#!/usr/bin/env bash
# A worker: import vipr's image from the control plane, then join. The control plane may
# still be provisioning (libvirt brings machines up in parallel): wait for its share.
# Env: CONTROL_PLANE_IP.
set -euo pipefail
: "${CONTROL_PLANE_IP:?}"
share=http://${CONTROL_PLANE_IP}:8099
if [ -f /etc/kubernetes/kubelet.conf ]; then
  echo "worker: already joined"
  exit 0
fi
for _ in $(seq 1 120); do
  curl -fsS -o /tmp/join.sh "$share/join.sh" 2>/dev/null && break
  sleep 10
done
[ -s /tmp/join.sh ] || { echo "worker: no join command at $share after 20 minutes" >&2; exit 1; }
curl -fsS -o /tmp/vipr-image.tar "$share/vipr-image.tar"
ctr -n k8s.io images import /tmp/vipr-image.tar >/dev/null
rm -f /tmp/vipr-image.tar
bash /tmp/join.sh
echo "worker: joined the cluster at ${CONTROL_PLANE_IP}"
