#!/usr/bin/env bash
# Every node: containerd, kubeadm/kubelet/kubectl at the pinned version (pkgs.k8s.io), the
# lab's CNI (ptp + host-local, routes to the other nodes' pod CIDRs), vipr's runtime tools
# (libbpf1, iproute2, iptables, nftables, ipset, ipvsadm) and Node 20.
# Env (from the Vagrantfile): K8S_MINOR, K8S_PACKAGE_VERSION, NODE_IP, POD_CIDR, PEERS.
set -euo pipefail
: "${K8S_MINOR:?}" "${K8S_PACKAGE_VERSION:?}" "${NODE_IP:?}" "${POD_CIDR:?}" "${PEERS:?}"
export DEBIAN_FRONTEND=noninteractive

# Kubernetes' requirements: no swap, forwarding, the overlay fs and bridge netfilter modules.
swapoff -a
sed -i '/\sswap\s/d' /etc/fstab
printf '%s\n' overlay br_netfilter ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh nf_conntrack >/etc/modules-load.d/k8s.conf
xargs -n1 modprobe </etc/modules-load.d/k8s.conf
cat >/etc/sysctl.d/90-k8s.conf <<'SYSCTL'
net.ipv4.ip_forward = 1
net.bridge.bridge-nf-call-iptables = 1
SYSCTL
sysctl -q --system

apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  ca-certificates curl gpg containerd buildah \
  libbpf1 iproute2 iptables nftables ipset ipvsadm ethtool conntrack socat nodejs >/dev/null
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  # bookworm's nodejs is 18: Node 20 from the Node.js project's apt repository.
  curl -fsSL https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key | gpg --dearmor --yes -o /usr/share/keyrings/nodesource.gpg
  echo 'deb [signed-by=/usr/share/keyrings/nodesource.gpg] https://deb.nodesource.com/node_20.x nodistro main' >/etc/apt/sources.list.d/nodesource.list
  apt-get update -qq
  apt-get install -y -qq nodejs >/dev/null
fi

# containerd with the systemd cgroup driver (kubelet's default since 1.22).
mkdir -p /etc/containerd
containerd config default >/etc/containerd/config.toml
sed -i 's/SystemdCgroup = false/SystemdCgroup = true/' /etc/containerd/config.toml
systemctl restart containerd

# kubeadm, kubelet, kubectl: one version, held.
curl -fsSL "https://pkgs.k8s.io/core:/stable:/v${K8S_MINOR}/deb/Release.key" | gpg --dearmor --yes -o /usr/share/keyrings/kubernetes.gpg
echo "deb [signed-by=/usr/share/keyrings/kubernetes.gpg] https://pkgs.k8s.io/core:/stable:/v${K8S_MINOR}/deb/ /" >/etc/apt/sources.list.d/kubernetes.list
apt-get update -qq
apt-get install -y -qq --allow-change-held-packages \
  "kubelet=${K8S_PACKAGE_VERSION}" "kubeadm=${K8S_PACKAGE_VERSION}" "kubectl=${K8S_PACKAGE_VERSION}" >/dev/null
apt-mark hold kubelet kubeadm kubectl >/dev/null
# The private network's address, not the NAT interface's (identical on every VirtualBox node).
echo "KUBELET_EXTRA_ARGS=--node-ip=${NODE_IP}" >/etc/default/kubelet
systemctl enable kubelet >/dev/null

# The CNI: ptp gives every pod its own veth and a /32 route on the node (no bridge), so pod
# traffic always crosses the host's TC hooks on the pod's veth, where vipr attaches. Flannel
# would work kube-proxy-free too, but its cni0 bridge switches same-node replies at L2, past
# the host's hooks (kube-proxy relies on br_netfilter for that). The plugins come with kubelet's
# kubernetes-cni package (/opt/cni/bin).
mkdir -p /etc/cni/net.d
cat >/etc/cni/net.d/10-vipr-lab.conflist <<CNI
{
  "cniVersion": "1.0.0",
  "name": "vipr-lab",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "${POD_CIDR}" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
CNI

# Routes to the other nodes' pods over the private network, and masquerading of pod traffic
# that leaves the pod network (pod-to-pod keeps its addresses).
cat >/usr/local/sbin/vipr-lab-routes <<ROUTES
#!/bin/sh
set -e
for peer in ${PEERS}; do
  ip=\${peer%%=*}
  cidr=\${peer#*=}
  [ "\$ip" = "${NODE_IP}" ] || ip route replace "\$cidr" via "\$ip"
done
iptables -t nat -C POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE 2>/dev/null ||
  iptables -t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE
ROUTES
chmod 0755 /usr/local/sbin/vipr-lab-routes
cat >/etc/systemd/system/vipr-lab-routes.service <<'UNIT'
[Unit]
Description=vipr lab: routes to the other nodes' pod CIDRs
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/vipr-lab-routes

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now vipr-lab-routes.service >/dev/null

# vipr pins its maps in the host's bpffs (the DaemonSet mounts it HostToContainer).
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
echo "common: node ${NODE_IP} ready for kubeadm (pods ${POD_CIDR})"
