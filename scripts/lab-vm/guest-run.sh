#!/bin/bash
# The lab VM's workload, run by guest-init.sh as root on the VM's stock Debian kernel. Reads
# /out/request.env (written by the host: VIPR_VM_MODES, VIPR_VM_COUNT, VIPR_VM_QUICK,
# VIPR_VM_ACCEL, VIPR_VM_SERVICES, VIPR_VM_ROUNDS, VIPR_VM_FAMILIES, VIPR_VM_ICOUNT_SHIFT,
# VIPR_VM_TRAFFIC_ONLY, VIPR_VM_NORTH_SOUTH, VIPR_VM_WATCH) and
# leaves /out/bench.json in the bench JSON format.
#
# With a build that has `vipr bench`, that is what runs. Without it, every mode is measured on
# the namespace lab (`vipr lab up`): bpf with vipr's agent; iptables, nftables and ipvs with the
# rules vipr renders for the same Services applied in the node namespace (render-apply.mjs), and
# the same client traffic (probe.mjs).
set -uo pipefail
OUT=/out
HERE=$(dirname "$(readlink -f "$0")")
LAB=vm
# shellcheck source=/dev/null
. "$OUT/request.env"
MODES=${VIPR_VM_MODES:-bpf iptables iptables-nft nftables ipvs}
COUNT=${VIPR_VM_COUNT:-500}
QUICK=${VIPR_VM_QUICK:-0}
ACCEL=${VIPR_VM_ACCEL:-unknown}
SERVICES=${VIPR_VM_SERVICES:-}
ROUNDS=${VIPR_VM_ROUNDS:-}
FAMILIES=${VIPR_VM_FAMILIES:-}
ICOUNT_SHIFT=${VIPR_VM_ICOUNT_SHIFT:-}
TRAFFIC_ONLY=${VIPR_VM_TRAFFIC_ONLY:-0}
NORTH_SOUTH=${VIPR_VM_NORTH_SOUTH:-}
WATCH=${VIPR_VM_WATCH:-0}

section() {
  printf '\n== %s\n' "$*"
}

# Evidence that reaches the host: at the end, and with VIPR_VM_WATCH=1 (vipr lab vm --watch-guest)
# every 30 s too, so that a run that hangs or is stopped still shows what it was doing, the labs'
# logs and state (/run/vipr/lab/<lab>/: agents, churn agent, socat), the netfilter tables of each
# namespace and a process list (appended to ps.log) go to /out/guest-state/. Not every 30 s by
# default: on the one vCPU a snapshot (a process per namespace) stalls what is being measured
# (seen: crr p50 +26 %, p99 ×10 in the rounds it hit).
snapshot() {
  local dir=$OUT/guest-state f ns
  mkdir -p "$dir/lab"
  find /run/vipr/lab -maxdepth 2 -type f \( -name '*.log' -o -name '*.json' \) 2>/dev/null | while read -r f; do
    mkdir -p "$dir/lab/$(basename "$(dirname "$f")")"
    cp "$f" "$dir/lab/$(basename "$(dirname "$f")")/"
  done
  {
    echo "guest uptime $(cut -d' ' -f1 /proc/uptime) s, load $(cut -d' ' -f1-4 /proc/loadavg)"
    for ns in $(ip netns list 2>/dev/null | cut -d' ' -f1); do
      echo "nft tables in $ns: $(timeout 10 ip netns exec "$ns" nft list tables 2>&1 | tr '\n' ' ')"
    done
    ps -eo pid,ppid,stat,wchan:20,etimes,times,rss,args --sort=pid
  } >>"$dir/ps.log" 2>&1
}
if [ "$WATCH" = 1 ]; then
  (while sleep 30; do snapshot; done) >/dev/null 2>&1 &
  snapshots=$!
  trap 'kill "$snapshots" 2>/dev/null; snapshot' EXIT
else
  trap snapshot EXIT
fi

section "environment"
echo "kernel $(uname -r), $(nproc) vCPU(s), node $(node --version), qemu accel $ACCEL${ICOUNT_SHIFT:+, icount shift=$ICOUNT_SHIFT}"
echo "clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
lsmod | grep -E '^ip_vs' || echo "no ip_vs modules loaded"
echo "\$ ipvsadm -Ln"
ipvsadm -Ln

# The emulation, said in the report: the bench cannot know it ran under it.
note_emulation() {
  [ -f "$OUT/bench.json" ] || return 0
  # shellcheck disable=SC2016 # JavaScript, not the shell
  node -e '
    const fs = require("node:fs");
    const [file, accel, shift] = process.argv.slice(1);
    const report = JSON.parse(fs.readFileSync(file, "utf8"));
    const note = shift !== ""
      ? "emulated CPU (TCG) with icount shift=" + shift + ": guest time is instructions x 2^" + shift + " ns (no caches, branch prediction, TLB or memory latency); compare ratios between modes only"
      : accel === "kvm" ? "virtual machine" : "emulated CPU (TCG): absolute times are meaningless, compare ratios between modes only";
    report.env = { ...report.env, kernel: report.env?.kernel ?? require("node:os").release(), accel,
      ...(shift !== "" ? { icountShift: Number(shift) } : {}), note };
    fs.writeFileSync(file, JSON.stringify(report, null, 2) + "\n");' "$OUT/bench.json" "$ACCEL" "$ICOUNT_SHIFT"
}

# North-south (vipr lab vm --north-south): packets from outside through each mode, IPVS included.
if [ -n "$NORTH_SOUTH" ]; then
  section "vipr bench --north-south --modes ${NORTH_SOUTH// /,}"
  args=(bench --north-south --modes "${NORTH_SOUTH// /,}" --json "$OUT/bench.json")
  [ "$QUICK" = 1 ] && args+=(--quick)
  [ -n "$ROUNDS" ] && args+=(--rounds "$ROUNDS")
  vipr "${args[@]}"
  code=$?
  note_emulation
  exit $code
fi

# The bpf agent on this kernel, before it is measured: how it attached (TCX links need 6.6; older
# kernels get the clsact fallback) and what it runs without (sock_destroy.bpf.o needs 6.5's
# bpf_sock_destroy), as its own log says.
if [[ " $MODES " == *" bpf "* ]]; then
  section "bpf agent on $(uname -r)"
  # lab up waits 30 s for its agent: under emulation a cold start (node, libbpf, the verifier)
  # can take longer, and lab up leaves it running; its log says when it is up.
  vipr lab up --name vmcheck >/dev/null 2>&1
  log=/run/vipr/lab/vmcheck/agent.log
  for _ in $(seq 300); do
    grep -q '"msg":"agent running"' "$log" 2>/dev/null && break
    sleep 1
  done
  # shellcheck disable=SC2016 # JavaScript's template literals, not the shell's
  [ -f "$log" ] && node -e '
    const fs = require("node:fs");
    const shown = /attached|TCX|socket destroyer|socket LB|agent running/;
    for (const line of fs.readFileSync(process.argv[1], "utf8").split("\n")) {
      if (!line.startsWith("{")) continue;
      const { level, time, pid, hostname, msg, ...fields } = JSON.parse(line);
      if (shown.test(msg)) console.log(`agent: ${msg} ${JSON.stringify(fields)}`);
    }' "$log"
  grep -q '"msg":"agent running"' "$log" 2>/dev/null || { echo "vipr-vm: the bpf agent did not start on $(uname -r):"; tail -n 5 "$log"; }
  vipr lab down --name vmcheck >/dev/null 2>&1
  # The XDP object as well (the one-node lab has no NIC to attach it to): loaded, verified and
  # closed over a pin dir of its own.
  # shellcheck disable=SC2016 # JavaScript's template literals, not the shell's
  VIPR_LOG_LEVEL=error node --input-type=module -e '
    const { LoadedDatapath } = await import("/opt/vipr/dist/src/bpf/datapath.js");
    const dp = LoadedDatapath.load("/sys/fs/bpf/vipr-vmcheck-xdp");
    try { dp.xdpProgram(); console.log(`xdp: xdp_lb.bpf.o loads on ${(await import("node:os")).release()}`); } finally { dp.close(); }' 2>&1 |
    tail -n 3
  vipr cleanup --pin-dir /sys/fs/bpf/vipr-vmcheck-xdp >/dev/null 2>&1
fi

if vipr bench --help >/dev/null 2>&1; then
  section "vipr bench --modes ${MODES// /,}"
  args=(bench --modes "${MODES// /,}" --json "$OUT/bench.json")
  [ "$QUICK" = 1 ] && args+=(--quick)
  [ "$TRAFFIC_ONLY" = 1 ] && args+=(--traffic-only)
  [ -n "$SERVICES" ] && args+=(--services "$SERVICES")
  [ -n "$ROUNDS" ] && args+=(--rounds "$ROUNDS")
  [ -n "$FAMILIES" ] && args+=(--families "$FAMILIES")
  vipr "${args[@]}"
  code=$?
  note_emulation
  exit $code
fi

section "this build has no 'vipr bench': every mode measured on the namespace lab with probe.mjs"
echo "\$ vipr run --mode ipvs (does the agent drive IPVS itself in this build?)"
timeout 20 vipr run --mode ipvs --manifests /nonexistent --iface lo 2>&1 | head -n 3

RESULTS=$OUT/results.jsonl
: >"$RESULTS"
failed=0
for mode in $MODES; do
  section "mode $mode"
  if [ "$mode" = bpf ]; then
    up=(lab up --name "$LAB")
  else
    up=(lab up --name "$LAB" --no-agent)
  fi
  if ! vipr "${up[@]}"; then
    echo "vipr-vm: mode $mode: lab up failed"
    failed=1
    vipr lab down --name "$LAB" >/dev/null 2>&1
    continue
  fi
  status=$(vipr lab status --name "$LAB" --json)
  manifests=$(node -e 'process.stdout.write(JSON.parse(process.argv[1]).manifests)' "$status")
  node_ip=$(node -e '
    const s = JSON.parse(process.argv[1]);
    const node = s.hosts.find((h) => h.role === "node");
    // The address facing the client (the lab client subnet, src/lab/topology.ts), not the pod gateway.
    const ip = (node?.addresses ?? []).find((a) => a.startsWith("172.30.0.")) ?? "";
    process.stdout.write(ip.split("/")[0]);' "$status")
  ok=1
  if [ "$mode" != bpf ]; then
    node "$HERE/render-apply.mjs" "$mode" "$manifests" "$LAB-node" "$node_ip" || ok=0
  fi
  if [ "$ok" = 1 ]; then
    nsenter --net="/run/netns/$LAB-client" node "$HERE/probe.mjs" "$mode" 10.0.0.213:80 10.0.0.53:53 "$COUNT" |
      tee -a "$RESULTS" || ok=0
  fi
  case $mode in
    bpf) vipr list -n --pin-dir "$(node -e 'process.stdout.write(JSON.parse(process.argv[1]).pinDir)' "$status")" ;;
    ipvs) nsenter --net="/run/netns/$LAB-node" ipvsadm -Ln ;;
    iptables) nsenter --net="/run/netns/$LAB-node" iptables-legacy -t nat -S KUBE-SERVICES ;;
    iptables-nft) nsenter --net="/run/netns/$LAB-node" iptables-nft -t nat -S KUBE-SERVICES ;;
    nftables) nsenter --net="/run/netns/$LAB-node" nft list chain ip kube-proxy services ;;
  esac
  [ "$ok" = 1 ] || { echo "vipr-vm: mode $mode failed"; failed=1; }
  vipr lab down --name "$LAB" >/dev/null
done

node -e '
  const fs = require("node:fs");
  const [resultsFile, out, accel] = process.argv.slice(1);
  const results = fs.readFileSync(resultsFile, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));
  const os = require("node:os");
  const env = {
    tool: "vipr lab vm (scripts/lab-vm/probe.mjs)",
    kernel: os.release(),
    cpus: os.cpus().length,
    node: process.version,
    accel,
    note: accel === "kvm" ? "virtual machine" : "emulated CPU (TCG): absolute times are meaningless, compare ratios between modes only",
  };
  fs.writeFileSync(out, JSON.stringify({ env, results }, null, 2) + "\n");' "$RESULTS" "$OUT/bench.json" "$ACCEL"
exit "$failed"
