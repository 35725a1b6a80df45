/*
 * Direct server return in the two-node lab (IPv4), for real: agents on node1 and node2, Services
 * whose only backend is be2 on node2, the external host `ext` reaching them through node1's
 * address. With `--lb-mode dsr` on node1, be2 sees ext's own address, and the reply goes from
 * node2 straight to ext: a 4 MiB download through node1's NodePort leaves node1's underlay
 * interface with little more than the client's ACKs, while the same download through a Service
 * annotated `vipr.io/lb-mode: snat` (beside it, on the same nodes) sends all 4 MiB out again. A
 * 4 MiB upload shows the MTU is handled (the option's 8 bytes: node2 lowers the SYN-ACK's MSS).
 * UDP too; `--lb-mode hybrid` keeps TCP direct and SNATs UDP. node2 runs with the default mode
 * (snat): taking the option off does not depend on the backend node's own mode.
 * One lab for the file; everything it starts is stopped, and the lab removed, at the end.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  datapathCounter, ensureBuilt, eventually, forceCleanLab, labChecksumErrors, labExec, labUdpRequest, labUp, nodePinDirOf, startNodeAgent, uniqueLabName,
  vipr, type NodeAgent,
} from '../helpers/lab.js';

const lab = uniqueLabName('dsr');
const work = mkdtempSync(join(tmpdir(), 'vipr-dsr-'));
const manifests = join(work, 'manifests');
const NODE1_IP = '192.168.60.11';
const EXT_IP = '192.168.60.100';
const BE2 = '10.244.2.11';
const BULK_PORT = 9000;
const BULK_BYTES = 4 * 1024 * 1024;

/** A NodePort Service whose one endpoint is be2 on node2. */
function nodePortService(name: string, nodePort: number, protocol: 'TCP' | 'UDP', port: number, targetPort: number, lbMode?: string): string {
  return `apiVersion: v1
kind: Service
metadata:
  name: ${name}
  namespace: default
${lbMode === undefined ? '' : `  annotations:\n    vipr.io/lb-mode: ${lbMode}\n`}spec:
  type: NodePort
  clusterIP: 10.0.0.${nodePort - 30000}
  ports:
  - protocol: ${protocol}
    port: ${port}
    targetPort: ${targetPort}
    nodePort: ${nodePort}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ${name}-1
  namespace: default
  labels:
    kubernetes.io/service-name: ${name}
addressType: IPv4
ports:
- name: ""
  protocol: ${protocol}
  port: ${targetPort}
endpoints:
- addresses: ["${BE2}"]
  conditions: {ready: true}
  nodeName: node2
`;
}

/** be2's bulk server: 'D' -> BULK_BYTES back; 'U' + bytes -> how many bytes came after the 'U'. */
const BULK_SERVER = `
const net = require('node:net');
const chunk = Buffer.alloc(65536, 120);
net.createServer({ allowHalfOpen: true }, (s) => {
  let mode = null, got = 0;
  s.on('data', (d) => {
    if (mode === null) {
      mode = String.fromCharCode(d[0]);
      d = d.subarray(1);
      if (mode === 'D') {
        let left = ${BULK_BYTES};
        const more = () => { while (left > 0) { left -= chunk.length; if (!s.write(chunk)) return s.once('drain', more); } s.end(); };
        more();
      }
    }
    got += d.length;
  });
  s.on('end', () => { if (mode === 'U') s.end(String(got)); });
  s.on('error', () => undefined);
}).listen(${BULK_PORT}, () => process.stdout.write('listening\\n'));`;

/** ext's side: download (prints the bytes received) or upload BULK_BYTES (prints the server's count). */
const BULK_CLIENT = `
const [ip, port, mode] = process.argv.slice(1);
const s = require('node:net').connect(Number(port), ip);
let got = 0, text = '';
const t = setTimeout(() => { process.stderr.write('timed out after ' + got + ' bytes\\n'); process.exit(3); }, 20000);
s.on('connect', () => {
  s.write(mode);
  if (mode === 'U') { s.write(Buffer.alloc(${BULK_BYTES}, 121)); s.end(); }
});
s.on('data', (d) => { got += d.length; if (mode === 'U') text += d; });
s.on('end', () => { clearTimeout(t); process.stdout.write(mode === 'U' ? text : String(got)); s.destroy(); });
s.on('error', (e) => { process.stderr.write(String(e.code) + '\\n'); process.exit(4); });`;

let node1: NodeAgent | null = null;
let node2: NodeAgent | null = null;
let bulk: ChildProcess | null = null;

function agentArgs(node: 'node1' | 'node2', lbMode: string): string[] {
  const ifaces = node === 'node1' ? ['eth0', 'eth1', 'vbe1'] : ['eth0', 'vbe2'];
  return [
    '--manifests', manifests, ...ifaces.flatMap((i) => ['--iface', i]), '--pin-dir', nodePinDirOf(lab, node), '--node-name', node,
    '--cluster-cidr', '10.244.0.0/16', '--node-ip', node === 'node1' ? NODE1_IP : '192.168.60.12', '--xdp', 'eth0',
    '--socket-lb', 'off', '--lb-mode', lbMode, '--metrics-bind-address', '127.0.0.1:0', '--healthz-bind-address', '127.0.0.1:0',
  ];
}

/** Byte and packet counters of `ifname` in `host`'s namespace (netlink: /sys shows the root namespace's). */
async function ifaceCounters(host: string, ifname: string): Promise<{ rxBytes: number; txBytes: number; rxPackets: number; txPackets: number }> {
  const res = await labExec(lab, host, ['ip', '-s', '-j', 'link', 'show', 'dev', ifname]);
  const [link] = JSON.parse(res.stdout) as { stats64: { rx: { bytes: number; packets: number }; tx: { bytes: number; packets: number } } }[];
  if (!link) throw new Error(`no ${ifname} in ${host}: ${res.stderr}`);
  return { rxBytes: link.stats64.rx.bytes, txBytes: link.stats64.tx.bytes, rxPackets: link.stats64.rx.packets, txPackets: link.stats64.tx.packets };
}

async function whoami(port: number): Promise<string> {
  const res = await labExec(lab, 'ext', ['curl', '-sS', '--max-time', '5', `http://${NODE1_IP}:${port}/whoami`]);
  if (res.code !== 0) throw new Error(`curl :${port} from ext: ${res.stderr}`);
  return res.stdout.trim();
}


async function transfer(port: number, mode: 'D' | 'U'): Promise<string> {
  const res = await labExec(lab, 'ext', [process.execPath, '-e', BULK_CLIENT, NODE1_IP, String(port), mode], { timeoutMs: 30_000 });
  if (res.code !== 0) throw new Error(`${mode} through :${port}: exit ${res.code}: ${res.stderr.trim()}`);
  return res.stdout;
}

/** A download through `port`, and how many bytes node1's underlay interface sent and received meanwhile. */
async function downloadThroughNode1(port: number): Promise<{ got: number; node1Tx: number; node1Rx: number }> {
  const before = await ifaceCounters('node1', 'eth0');
  const got = Number(await transfer(port, 'D'));
  const after = await ifaceCounters('node1', 'eth0');
  return { got, node1Tx: after.txBytes - before.txBytes, node1Rx: after.rxBytes - before.rxBytes };
}

const nodeCounter = (node: 'node1' | 'node2', name: string): Promise<number> => datapathCounter(nodePinDirOf(lab, node), name);

beforeAll(async () => {
  await ensureBuilt();
  await labUp(lab, { nodes: 2, backends: 1, ipFamily: 'ipv4' });
  mkdirSync(manifests);
  writeFileSync(join(manifests, 'dsr-web.yaml'), nodePortService('dsr-web', 30090, 'TCP', 80, 80));
  writeFileSync(join(manifests, 'dsr-udp.yaml'), nodePortService('dsr-udp', 30091, 'UDP', 53, 5353));
  writeFileSync(join(manifests, 'dsr-bulk.yaml'), nodePortService('dsr-bulk', 30092, 'TCP', BULK_PORT, BULK_PORT));
  writeFileSync(join(manifests, 'snat-bulk.yaml'), nodePortService('snat-bulk', 30093, 'TCP', BULK_PORT, BULK_PORT, 'snat'));
  writeFileSync(join(manifests, 'snat-web.yaml'), nodePortService('snat-web', 30094, 'TCP', 80, 80, 'snat'));
  writeFileSync(join(manifests, 'bad-mode.yaml'), nodePortService('bad-mode', 30095, 'TCP', 80, 80, 'direct'));
  bulk = spawn('nsenter', [`--net=/run/netns/${lab}-be2`, process.execPath, '-e', BULK_SERVER], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    bulk?.stdout?.once('data', () => resolve());
    bulk?.once('exit', (code) => reject(new Error(`bulk server exited ${code}`)));
  });
  node2 = await startNodeAgent(`${lab}-node2`, agentArgs('node2', 'snat'));
  node1 = await startNodeAgent(`${lab}-node1`, agentArgs('node1', 'dsr'));
}, 240_000);

afterAll(async () => {
  await node1?.kill();
  await node2?.kill();
  if (bulk && bulk.exitCode === null) {
    bulk.kill('SIGKILL');
    await new Promise((r) => bulk?.once('exit', r));
  }
  await forceCleanLab(lab);
  rmSync(work, { recursive: true, force: true });
}, 60_000);

describe('--lb-mode dsr on the balancing node (node1)', () => {
  it('TCP: the request works and the backend on node2 sees the external client itself', async () => {
    const csumBefore = await labChecksumErrors(lab, 'ext');
    expect(await eventually(() => whoami(30090))).toMatch(new RegExp(`^be2 ${EXT_IP.replace(/\./g, '\\.')}:\\d+$`));
    expect(await nodeCounter('node1', 'dsr_encap')).toBeGreaterThan(0);
    expect(await nodeCounter('node2', 'dsr_decap')).toBeGreaterThan(0);
    expect(await labChecksumErrors(lab, 'ext')).toEqual(csumBefore);
  });

  it('UDP: answered, and the backend sees the external client itself', async () => {
    const answer = await eventually(() => labUdpRequest(lab, 'ext', NODE1_IP, 30091, 'whoami'));
    expect(answer).toMatch(new RegExp(`^be2 ${EXT_IP.replace(/\./g, '\\.')}:\\d+$`));
  });

  it('the reply does not cross node1: a 4 MiB download leaves node1 with under 1 MiB; through an snat Service beside it, with all of it', async () => {
    const direct = await downloadThroughNode1(30092);
    const snat = await downloadThroughNode1(30093);
    expect(direct.got).toBe(BULK_BYTES);
    expect(snat.got).toBe(BULK_BYTES);
    // Direct: node1 forwards only what ext sends (requests, ACKs) to node2, each 8 bytes longer.
    expect(direct.node1Tx).toBeLessThan(1024 * 1024);
    expect(direct.node1Rx).toBeLessThan(1024 * 1024);
    // SNAT: the 4 MiB come in from node2 and go out to ext, through the same interface.
    expect(snat.node1Tx).toBeGreaterThan(BULK_BYTES);
    expect(snat.node1Rx).toBeGreaterThan(BULK_BYTES);
  });

  it('an upload of 4 MiB fits the underlay with the option: the MSS node2 announces leaves room for it', async () => {
    const mtuDropsBefore = await nodeCounter('node1', 'drop_dsr_mtu');
    expect(await transfer(30092, 'U')).toBe(String(BULK_BYTES));
    expect(await nodeCounter('node1', 'drop_dsr_mtu')).toBe(mtuDropsBefore);
  });

  it('a Service annotated snat beside it: SNATed as before (be2 sees node1)', async () => {
    expect(await eventually(() => whoami(30094))).toMatch(new RegExp(`^be2 ${NODE1_IP.replace(/\./g, '\\.')}:\\d+$`));
  });

  it('a bad annotation value: one warning naming the Service and the valid values, the Service served with the node mode', async () => {
    expect(node1?.log()).toContain(
      'Service default/bad-mode: annotation vipr.io/lb-mode \\"direct\\" is not an lb mode; use one of snat, dsr, hybrid (using the node\'s --lb-mode meanwhile)',
    );
    expect(await eventually(() => whoami(30095))).toMatch(new RegExp(`^be2 ${EXT_IP.replace(/\./g, '\\.')}:\\d+$`));
  });
});

describe('--lb-mode hybrid on node1', () => {
  beforeAll(async () => {
    await node1?.kill();
    node1 = await startNodeAgent(`${lab}-node1`, agentArgs('node1', 'hybrid'));
  }, 60_000);

  it('TCP stays direct: be2 sees the client, the download leaves node1 without its bytes', async () => {
    expect(await eventually(() => whoami(30090))).toMatch(new RegExp(`^be2 ${EXT_IP.replace(/\./g, '\\.')}:\\d+$`));
    const direct = await downloadThroughNode1(30092);
    expect(direct.got).toBe(BULK_BYTES);
    expect(direct.node1Tx).toBeLessThan(1024 * 1024);
  });

  it('UDP is SNATed: be2 sees node1, and the answer comes back through it', async () => {
    const answer = await eventually(async () => {
      const a = await labUdpRequest(lab, 'ext', NODE1_IP, 30091, 'whoami');
      if (!a.startsWith(`be2 ${NODE1_IP}:`)) throw new Error(`not SNATed yet: ${a}`);
      return a;
    });
    expect(answer).toMatch(new RegExp(`^be2 ${NODE1_IP.replace(/\./g, '\\.')}:\\d+$`));
  });

  it('no checksum errors at the client or the backend', async () => {
    for (const host of ['ext', 'be2']) {
      const errs = await labChecksumErrors(lab, host);
      expect([host, errs.tcp, errs.udp]).toEqual([host, 0, 0]);
    }
  });
});
