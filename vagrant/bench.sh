#!/usr/bin/env bash
# The bench traffic on the Vagrant cluster, in whichever mode it was brought up with
# (VIPR_MODE=bpf: vipr; VIPR_MODE=ipvs: kube-proxy IPVS): a server Deployment (3 replicas of the
# lab's backend server: HTTP :80, UDP echo :5353) behind one Service, and a client pod running
# scripts/lab-vm/probe.mjs (rr, crr, udp), for each placement:
#   same-node   client and backends on w1
#   cross-node  client on w1, backends on w2
# Results go to results/<mode>-<time>.json in the bench JSON format.
#
# usage: ./bench.sh [--count N] [--placements "same-node cross-node"]
# Run it from vagrant/ on the host (it runs itself on the control plane through `vagrant ssh`),
# or on the control plane as root with --in-cluster.
set -euo pipefail
COUNT=2000
PLACEMENTS="same-node cross-node"
IN_CLUSTER=0
while [ $# -gt 0 ]; do
  case $1 in
    --count) COUNT=$2; shift 2 ;;
    --placements) PLACEMENTS=$2; shift 2 ;;
    --in-cluster) IN_CLUSTER=1; shift ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

if [ "$IN_CLUSTER" = 0 ]; then
  cd "$(dirname "$0")"
  mkdir -p results
  mode=$(vagrant ssh cp -c 'cat /var/lib/vipr-lab/share/mode' 2>/dev/null | tr -d '\r\n')
  out="results/${mode:-unknown}-$(date -u +%Y%m%dT%H%M%SZ).json"
  vagrant ssh cp -c "sudo bash /vipr/vagrant/bench.sh --in-cluster --count $COUNT --placements '$PLACEMENTS'" |
    tr -d '\r' | sed -n '/^BENCH-JSON-BEGIN$/,/^BENCH-JSON-END$/p' | sed '1d;$d' >"$out"
  [ -s "$out" ] || { echo "bench.sh: no results came back" >&2; exit 1; }
  echo "bench.sh: results in vagrant/$out"
  exit 0
fi

export KUBECONFIG=/etc/kubernetes/admin.conf
MODE=$(cat /var/lib/vipr-lab/share/mode)
NS=vipr-bench
log() { echo "bench.sh: $*" >&2; }

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$NS" create configmap probe --from-file=probe.mjs=/vipr/scripts/lab-vm/probe.mjs \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null

deploy_servers() {
  local node=$1
  kubectl -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: 3
  selector:
    matchLabels: { app: echo }
  template:
    metadata:
      labels: { app: echo }
    spec:
      nodeSelector: { kubernetes.io/hostname: ${node} }
      containers:
        - name: echo
          image: vipr:dev
          imagePullPolicy: IfNotPresent
          command: [node, /opt/vipr/dist/src/lab/backend-server.js, --name, \$(POD_NAME)]
          env:
            - name: POD_NAME
              valueFrom: { fieldRef: { fieldPath: metadata.name } }
          readinessProbe:
            tcpSocket: { port: 80 }
---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  selector: { app: echo }
  ports:
    - { name: http, protocol: TCP, port: 80, targetPort: 80 }
    - { name: udp, protocol: UDP, port: 53, targetPort: 5353 }
YAML
  kubectl -n "$NS" rollout status deploy/echo --timeout=3m >/dev/null
}

run_client() {
  local placement=$1 vip=$2 services
  services=$(kubectl get services -A --no-headers | wc -l)
  kubectl -n "$NS" delete pod client --ignore-not-found --wait >/dev/null
  kubectl -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  restartPolicy: Never
  nodeSelector: { kubernetes.io/hostname: w1 }
  containers:
    - name: client
      image: vipr:dev
      imagePullPolicy: IfNotPresent
      command: [node, /probe/probe.mjs, ${MODE}, "${vip}:80", "${vip}:53", "${COUNT}", ${placement}, "${services}"]
      volumeMounts:
        - { name: probe, mountPath: /probe }
  volumes:
    - name: probe
      configMap: { name: probe }
YAML
  kubectl -n "$NS" wait pod/client --for=jsonpath='{.status.phase}'=Succeeded --timeout=15m >/dev/null ||
    { kubectl -n "$NS" logs client >&2 || true; return 1; }
  kubectl -n "$NS" logs client
}

results=$(mktemp)
for placement in $PLACEMENTS; do
  case $placement in
    same-node) server_node=w1 ;;
    cross-node) server_node=w2 ;;
    *) log "unknown placement $placement"; exit 2 ;;
  esac
  log "$MODE: $placement (servers on $server_node, client on w1), $COUNT requests per metric"
  deploy_servers "$server_node"
  vip=$(kubectl -n "$NS" get service echo -o jsonpath='{.spec.clusterIP}')
  run_client "$placement" "$vip" >>"$results"
  kubectl -n "$NS" delete deploy/echo --wait >/dev/null
done
kubectl delete namespace "$NS" --wait=false >/dev/null

echo BENCH-JSON-BEGIN
node -e '
  const fs = require("node:fs");
  const [file, mode, k8s] = process.argv.slice(1);
  const results = fs.readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
  const env = { tool: "vagrant/bench.sh", cluster: "vagrant: 1 control plane + 2 workers", proxy: mode === "bpf" ? "vipr (bpf)" : "kube-proxy (ipvs)", kubernetes: k8s, kernel: require("node:os").release() };
  process.stdout.write(JSON.stringify({ env, results }, null, 2) + "\n");' "$results" "$MODE" "$(kubectl version -o json | node -p 'JSON.parse(require("fs").readFileSync(0)).serverVersion.gitVersion')"
echo BENCH-JSON-END
rm -f "$results"
