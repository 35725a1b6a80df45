#!/usr/bin/env bash
# The main job on the local lab: bring it up (client, node with vipr, 3 backends; dual-stack),
# send a few requests to the ClusterIP from the client over IPv4 and IPv6, show which backend
# answered, then the table.
set -euo pipefail
cd "$(dirname "$0")/.."
vipr() { node dist/src/cli/main.js "$@"; }

if [ "$(id -u)" != 0 ]; then
  echo "make demo needs root (network namespaces, BPF): run it with sudo" >&2
  exit 1
fi

if [ -f /run/vipr/lab/vipr/state.json ]; then
  echo "== a lab is already up: taking it down first"
  vipr lab down
fi

echo "== vipr lab up (dual-stack: every link has an IPv4 and an IPv6 address)"
vipr lab up

echo
echo "== 10 requests to nginx-service (ClusterIP 10.0.0.213:80) from the client"
for _ in $(seq 1 10); do
  printf 'curl http://10.0.0.213/  ->  %s\n' "$(vipr lab exec client -- curl -s -m 2 http://10.0.0.213/)"
done

echo
echo "== 10 requests to nginx-service over IPv6 (ClusterIP [fd00:10:96::213]:80) from the client"
for _ in $(seq 1 10); do
  printf 'curl -g http://[fd00:10:96::213]/  ->  %s\n' "$(vipr lab exec client -- curl -s -g -m 2 'http://[fd00:10:96::213]/')"
done

echo
echo "== the backend sees the client's own address, in either family"
printf 'curl http://10.0.0.213/whoami  ->  %s\n' "$(vipr lab exec client -- curl -s -m 2 http://10.0.0.213/whoami)"
printf 'curl -g http://[fd00:10:96::213]/whoami  ->  %s\n' "$(vipr lab exec client -- curl -s -g -m 2 'http://[fd00:10:96::213]/whoami')"

echo
echo "== 3 requests from the node itself (socket LB: connect() goes straight to a backend)"
for _ in 1 2 3; do
  printf 'node: curl http://10.0.0.213/  ->  %s\n' "$(vipr lab exec node -- curl -s -m 2 http://10.0.0.213/)"
done
printf 'node: curl -g http://[fd00:10:96::213]/  ->  %s\n' "$(vipr lab exec node -- curl -s -g -m 2 'http://[fd00:10:96::213]/')"

echo
echo "== a UDP request to echo-udp (10.0.0.53:53)"
printf 'udp 10.0.0.53:53  ->  %s\n' "$(vipr lab exec client -- sh -c 'echo ping | socat -t1 - UDP:10.0.0.53:53')"
printf 'udp [fd00:10:96::53]:53  ->  %s\n' "$(vipr lab exec client -- sh -c 'echo ping | socat -t1 - UDP6:[fd00:10:96::53]:53')"

echo
echo "== vipr list -n"
vipr list -n

cat <<'MSG'

The lab stays up. Try:
  node dist/src/cli/main.js lab exec client -- curl -s http://10.0.0.213/
  node dist/src/cli/main.js lab exec client -- curl -s -g 'http://[fd00:10:96::213]/'
  node dist/src/cli/main.js list            # with service names
  node dist/src/cli/main.js stats           # datapath counters
  node dist/src/cli/main.js lab status      # hosts, addresses, the manifests directory (edit it live)
  node dist/src/cli/main.js lab down        # removes everything the lab made
MSG
