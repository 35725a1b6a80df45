#!/usr/bin/env bash
# The control plane: kubeadm init (without kube-proxy in bpf mode, with kube-proxy in IPVS
# mode otherwise), vipr's image, and vipr's DaemonSet in bpf mode. Publishes the join command
# and the image archive to the workers over the private network (port 8099; lab only: the join
# token is readable by anyone on that network for the 2 hours it lives).
# Env: VIPR_MODE (bpf|ipvs), NODE_IP, K8S_PACKAGE_VERSION.
set -euo pipefail
: "${VIPR_MODE:?}" "${NODE_IP:?}" "${K8S_PACKAGE_VERSION:?}"
share=/var/lib/vipr-lab/share
mkdir -p "$share"

k8s_version=v${K8S_PACKAGE_VERSION%%-*}
cat >/etc/vipr-lab-kubeadm.yaml <<KUBEADM
apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: ${NODE_IP}
  bindPort: 6443
nodeRegistration:
  kubeletExtraArgs:
    node-ip: ${NODE_IP}
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: ${k8s_version}
controlPlaneEndpoint: ${NODE_IP}:6443
networking:
  serviceSubnet: 10.96.0.0/12
---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
clusterCIDR: 10.244.0.0/16
ipvs:
  scheduler: rr
KUBEADM

if [ ! -f /etc/kubernetes/admin.conf ]; then
  skip=()
  # Without kube-proxy nothing serves the kubernetes Service VIP until vipr runs: vipr reaches
  # the API server at NODE_IP:6443 (deploy/config.yaml).
  [ "$VIPR_MODE" = bpf ] && skip=(--skip-phases=addon/kube-proxy)
  kubeadm init --config /etc/vipr-lab-kubeadm.yaml "${skip[@]}"
fi
mkdir -p /root/.kube /home/vagrant/.kube
cp /etc/kubernetes/admin.conf /root/.kube/config
cp /etc/kubernetes/admin.conf /home/vagrant/.kube/config
chown -R vagrant: /home/vagrant/.kube
export KUBECONFIG=/etc/kubernetes/admin.conf

# The image first: in both modes the bench's server and client pods run from it.
/vipr/vagrant/provision/build-image.sh "$share/vipr-image.tar"
kubeadm token create --print-join-command >"$share/join.sh"
echo "$VIPR_MODE" >"$share/mode"
systemctl stop vipr-lab-share 2>/dev/null || true
systemd-run --unit vipr-lab-share --collect python3 -m http.server 8099 --bind "$NODE_IP" --directory "$share" >/dev/null

if [ "$VIPR_MODE" = bpf ]; then
  kubectl -n kube-system create configmap vipr-config --dry-run=client -o yaml \
    --from-literal=k8s-service-host="$NODE_IP" --from-literal=k8s-service-port=6443 | kubectl apply -f -
  kubectl apply -f /vipr/deploy/serviceaccount.yaml -f /vipr/deploy/rbac.yaml -f /vipr/deploy/daemonset.yaml
  kubectl -n kube-system rollout status ds/vipr --timeout=5m
fi
echo "control-plane: cluster up in $VIPR_MODE mode; workers join from http://$NODE_IP:8099/"
