// Programs one of kube-proxy's modes into a lab node's namespace with the rules vipr's renderers
// produce (src/render/), applied with the real tools, the way kube-proxy applies them. The VM
// lab uses it to measure every mode on one kernel while `vipr run` only drives the bpf mode.
//
// usage: node render-apply.mjs iptables|iptables-nft|nftables|ipvs MANIFEST_DIR NODE_NETNS NODE_IP
// (`iptables` is iptables-legacy, as in vipr bench; Debian's default `iptables` is the nft one).
import { execFileSync } from 'node:child_process';

const dist = new URL('../../dist/src/', import.meta.url);
const { loadManifestDir } = await import(new URL('sources/manifest.js', dist).href);
const { buildDesiredState } = await import(new URL('model/build.js', dist).href);
const render = await import(new URL('render/index.js', dist).href);

const [mode, manifestDir, netns, nodeIp] = process.argv.slice(2);
if (!['iptables', 'iptables-nft', 'nftables', 'ipvs'].includes(mode ?? '') || !manifestDir || !netns || !nodeIp) {
  process.stderr.write('usage: render-apply.mjs iptables|iptables-nft|nftables|ipvs MANIFEST_DIR NODE_NETNS NODE_IP\n');
  process.exit(2);
}

/** Runs a tool inside the node's namespace (nsenter: `ip netns exec` would remount /sys). */
function inNode(cmd, args, input, stderr = 'inherit') {
  execFileSync('nsenter', [`--net=/run/netns/${netns}`, cmd, ...args], {
    input,
    stdio: [input === undefined ? 'ignore' : 'pipe', 'inherit', stderr],
  });
}

function installJumps(iptables, rules) {
  for (const r of rules) {
    // -N fails when the chain exists (the restore created it): that is fine.
    try {
      inNode(iptables, ['-w', '-t', r.table, '-N', r.target], undefined, 'ignore');
    } catch {
      /* exists */
    }
    inNode(iptables, ['-w', '-t', r.table, '-I', r.chain, '1', ...r.args], undefined);
  }
}

const { objects, problems } = await loadManifestDir(manifestDir);
if (problems.length > 0) throw new Error(`manifests in ${manifestDir}: ${problems.map(String).join('; ')}`);
const state = buildDesiredState(objects, { name: 'node', zone: null, ips: [nodeIp] }, () => undefined);
const options = {
  clusterCIDR: null,
  masqueradeAll: false,
  nodeIPs: [nodeIp],
  nodePortAddresses: [],
  ipvsScheduler: 'rr',
};

switch (mode) {
  case 'iptables':
  case 'iptables-nft': {
    const iptables = mode === 'iptables' ? 'iptables-legacy' : 'iptables-nft';
    installJumps(iptables, render.iptablesJumpRules());
    inNode(`${iptables}-restore`, ['-w', '--noflush'], render.renderIptables(state, options));
    break;
  }
  case 'nftables':
    inNode('nft', ['-f', '-'], render.renderNftables(state, options));
    break;
  case 'ipvs': {
    const ipvs = render.renderIpvs(state, options);
    // What kube-proxy's IPVS proxier sets up before its first sync.
    inNode('sysctl', ['-qw', 'net.ipv4.vs.conntrack=1'], undefined);
    inNode('ip', ['link', 'add', 'kube-ipvs0', 'type', 'dummy'], undefined);
    for (const a of ipvs.addresses) inNode('ip', ['addr', 'add', `${a}/32`, 'dev', 'kube-ipvs0'], undefined);
    inNode('ipset', ['restore'], ipvs.ipset);
    inNode('iptables-restore', ['-w', '--noflush'], ipvs.iptables);
    installJumps('iptables', render.ipvsIptablesJumpRules());
    inNode('ipvsadm', ['-R'], ipvs.ipvsadm);
    break;
  }
}
process.stdout.write(`render-apply: ${mode} rules for ${state.services.length} service ports applied in ${netns}\n`);
