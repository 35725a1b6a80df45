// The VM lab's traffic when the build has no `vipr bench`: from the lab client, sequential
// request/response latencies to a ClusterIP, one result line (bench JSON result) per metric:
//   rr   HTTP requests on one kept-alive TCP connection (the per-packet path)
//   crr  a new TCP connection per request (connection setup through the NAT: conntrack, rules)
//   udp  one datagram and its reply per request
// Raw sockets, no HTTP client: the client's own cost should be small and the same in every mode.
//
// usage: node probe.mjs MODE TCP_IP:PORT UDP_IP:PORT COUNT [PLACEMENT] [SERVICES]
// (vagrant/bench.sh runs it in a client pod with the cluster's placement and service count).
import { connect } from 'node:net';
import { createSocket } from 'node:dgram';

const [mode, tcpTarget, udpTarget, countArg, placement = 'netns-lab', servicesArg = '2'] = process.argv.slice(2);
const count = Number(countArg);
const services = Number(servicesArg);
if (!mode || !tcpTarget || !udpTarget || !Number.isInteger(count) || count < 10) {
  process.stderr.write('usage: probe.mjs MODE TCP_IP:PORT UDP_IP:PORT COUNT(>=10) [PLACEMENT] [SERVICES]\n');
  process.exit(2);
}
const [tcpHost, tcpPort] = tcpTarget.split(':');
const [udpHost, udpPort] = udpTarget.split(':');
const REQUEST = 'GET / HTTP/1.1\r\nHost: vip\r\n\r\n';
const TIMEOUT_MS = 5000;

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** One HTTP response on `socket`: headers, then content-length bytes of body. */
function readResponse(socket) {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onError = (err) => {
      socket.off('data', onData);
      reject(err);
    };
    const onData = (chunk) => {
      buf += chunk.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const len = Number(/content-length: *(\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
      if (buf.length >= end + 4 + len) {
        socket.off('data', onData);
        socket.off('error', onError);
        resolve(buf.slice(0, 12));
      }
    };
    socket.on('data', onData);
    socket.once('error', onError);
  });
}

function open() {
  return new Promise((resolve, reject) => {
    const s = connect({ host: tcpHost, port: Number(tcpPort), noDelay: true }, () => resolve(s));
    s.once('error', reject);
  });
}

async function rr() {
  const socket = await withTimeout(open(), 'rr connect');
  const samples = [];
  for (let i = 0; i < count; i++) {
    const t = process.hrtime.bigint();
    socket.write(REQUEST);
    await withTimeout(readResponse(socket), 'rr request');
    samples.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  socket.destroy();
  return samples;
}

async function crr() {
  const samples = [];
  for (let i = 0; i < count; i++) {
    const t = process.hrtime.bigint();
    const socket = await withTimeout(open(), 'crr connect');
    socket.write(REQUEST);
    await withTimeout(readResponse(socket), 'crr request');
    samples.push(Number(process.hrtime.bigint() - t) / 1000);
    socket.destroy();
  }
  return samples;
}

async function udp() {
  const socket = createSocket('udp4');
  await new Promise((resolve) => socket.connect(Number(udpPort), udpHost, resolve));
  const samples = [];
  for (let i = 0; i < count; i++) {
    const t = process.hrtime.bigint();
    const reply = new Promise((resolve) => socket.once('message', resolve));
    socket.send('ping');
    await withTimeout(reply, 'udp request');
    samples.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  socket.close();
  return samples;
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

for (const [metric, measure] of [['rr', rr], ['crr', crr], ['udp', udp]]) {
  // A few unmeasured rounds first: JIT, ARP, the first conntrack entries.
  const samples = (await measure()).slice(Math.min(10, Math.floor(count / 10)));
  const sorted = [...samples].sort((a, b) => a - b);
  const total = samples.reduce((a, b) => a + b, 0);
  const result = {
    mode,
    services,
    placement,
    metric,
    p50: Math.round(quantile(sorted, 0.5)),
    p99: Math.round(quantile(sorted, 0.99)),
    rate: Math.round((samples.length / total) * 1e6),
    unit: 'us',
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
