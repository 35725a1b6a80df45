#!/usr/bin/env bash
# vipr on kind: cluster without kube-proxy, image built with Docker and loaded into every
# node, DaemonSet pointed at the control plane's address (no Service VIP works before vipr).
#
# usage: vagrant/kind/deploy.sh [up|down]      (needs docker, kind, kubectl)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CLUSTER=vipr
IMAGE=vipr:dev

case ${1:-up} in
  up) ;;
  down)
    kind delete cluster --name "$CLUSTER"
    exit 0
    ;;
  *)
    echo "usage: $0 [up|down]" >&2
    exit 2
    ;;
esac

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "deploy.sh: $tool not found" >&2; exit 1; }
done

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --config "$REPO/vagrant/kind/kind-config.yaml"
docker build -t "$IMAGE" "$REPO"
kind load docker-image "$IMAGE" --name "$CLUSTER"

# The API server as the nodes reach it: the control-plane container's address on kind's network.
api_host=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$CLUSTER-control-plane")
kubectl config use-context "kind-$CLUSTER" >/dev/null
kubectl apply -k "$REPO/deploy"
kubectl -n kube-system create configmap vipr-config --dry-run=client -o yaml \
  --from-literal=k8s-service-host="$api_host" --from-literal=k8s-service-port=6443 | kubectl apply -f -
kubectl -n kube-system rollout restart ds/vipr
kubectl -n kube-system rollout status ds/vipr --timeout=5m
echo
echo "vipr is running on every node. Try:"
echo "  kubectl -n kube-system exec ds/vipr -- vipr list -n"
