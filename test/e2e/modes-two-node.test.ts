/*
 * The fallback modes serve the node's own traffic in the two-node lab, as kube-proxy's OUTPUT
 * chain does: from node1, the ClusterIP and the NodePort on node1's address and on node2's answer
 * (and 127.0.0.1 in iptables mode, kube-proxy's localhost NodePorts). One agent per node, each
 * in its node's namespace applying its mode's rules there (nsenter --net, as the lab's agent).
 */
import { WEB_NODEPORT_SERVICE } from '../../src/lab/manifests.js';
import { ensureBuilt, forceCleanLab, labExec, labStatus, labUp, startNodeAgent, uniqueLabName, type LabStatusJson, type NodeAgent } from '../helpers/lab.js';

const MODES: Array<[string, string[]]> = [
  ['iptables (legacy)', ['--mode', 'iptables', '--iptables-backend', 'legacy']],
  ['nftables', ['--mode', 'nftables']],
];

describe.each(MODES)('two-node lab, vipr run %s: the node reaches every Service', (name, args) => {
  const lab = uniqueLabName('m2');
  const agents: NodeAgent[] = [];
  let status: LabStatusJson;

  beforeAll(async () => {
    await ensureBuilt();
    await labUp(lab, { nodes: 2, agent: false });
    status = await labStatus(lab);
    for (const node of status.nodes) {
      agents.push(await startNodeAgent(node.netns, [
        ...args, '--manifests', status.manifests, '--node-name', node.nodeName, '--node-ip', node.nodeIp as string,
        '--pin-dir', node.pinDir, '--min-sync-period', '200ms',
      ]));
    }
  }, 180_000);

  afterAll(async () => {
    for (const agent of agents) await agent.kill();
    await forceCleanLab(lab);
  }, 60_000);

  test('ClusterIP and NodePort (own address, the other node\'s, 127.0.0.1 in iptables mode) from node1', async () => {
    const [node1, node2] = status.nodes;
    const port = WEB_NODEPORT_SERVICE.nodePort;
    const urls = [`http://${WEB_NODEPORT_SERVICE.clusterIP}/`, `http://${node1?.nodeIp}:${port}/`, `http://${node2?.nodeIp}:${port}/`];
    // kube-proxy writes localhost NodePorts (route_localnet) in iptables mode only.
    if (args.includes('iptables')) urls.push(`http://127.0.0.1:${port}/`);
    const backends = status.hosts.filter((h) => h.role === 'backend').map((h) => h.name);
    for (const url of urls) {
      const res = await labExec(lab, 'node1', ['sh', '-c', `for i in 1 2 3 4; do curl -s -m 3 ${url} || echo FAILED; done`]);
      const answers = res.stdout.trim().split('\n');
      expect({ url, answers: answers.filter((a) => !backends.includes(a)) }).toEqual({ url, answers: [] });
      expect(answers).toHaveLength(4);
    }
  }, 90_000);
});
