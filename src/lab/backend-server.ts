/*
 * A lab backend pod's server, started by `vipr lab up` inside the backend's namespace:
 *   HTTP on TCP :80   any path → `<name>\n`; `GET /whoami` → `<name> <client ip>:<port>\n`
 *                     (the address the server saw: shows whether the client's source survived NAT)
 *   UDP on :5353      any datagram → `<name>`; the datagram `whoami` → `<name> <client ip>:<port>`
 * Keep-alive is allowed, so one client connection may carry many requests. Nothing is logged per
 * request (benchmarks run through these); the one `listening` line is what `up` waits for.
 *
 * SIGUSR1 makes the server drain, as a pod leaving service does: it still answers, but every
 * answer carries `Connection: close`, so keep-alive clients finish their request and reconnect
 * (through the Service, to another endpoint) instead of being cut off. SIGUSR2 ends draining.
 * The disruption soak (src/bench/disruption.ts) sends these as it rolls endpoints.
 *
 * usage: node backend-server.js --name be1 [--http-port 80] [--udp-port 5353]
 */
import { createServer } from 'node:http';
import { createSocket } from 'node:dgram';
import { parseArgs } from 'node:util';

function portOption(value: string | undefined, fallback: number, flag: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535) {
    process.stderr.write(`backend-server: ${flag} must be a port number, got '${value}'\n`);
    process.exit(2);
  }
  return n;
}

const { values } = parseArgs({
  options: {
    name: { type: 'string' },
    'http-port': { type: 'string' },
    'udp-port': { type: 'string' },
  },
  strict: true,
});
const name = values.name;
if (!name) {
  process.stderr.write('backend-server: --name is required\n');
  process.exit(2);
}
const httpPort = portOption(values['http-port'], 80, '--http-port');
const udpPort = portOption(values['udp-port'], 5353, '--udp-port');

let draining = false;
process.on('SIGUSR1', () => {
  draining = true;
});
process.on('SIGUSR2', () => {
  draining = false;
});

const http = createServer((req, res) => {
  const path = (req.url ?? '/').split('?')[0];
  const body =
    path === '/whoami' ? `${name} ${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}\n` : `${name}\n`;
  if (draining) res.setHeader('connection', 'close');
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
  res.end(req.method === 'HEAD' ? undefined : body);
});

const udp = createSocket('udp4');
udp.on('message', (msg, rinfo) => {
  const reply = msg.toString('utf8').trim() === 'whoami' ? `${name} ${rinfo.address}:${rinfo.port}` : name;
  udp.send(reply, rinfo.port, rinfo.address);
});

function fail(what: string, err: Error): never {
  process.stderr.write(`backend-server ${name}: ${what}: ${err.message}\n`);
  process.exit(1);
}
http.on('error', (err) => fail(`http :${httpPort}`, err));
udp.on('error', (err) => fail(`udp :${udpPort}`, err));

let pending = 2;
function listening(): void {
  pending -= 1;
  if (pending === 0) {
    process.stdout.write(`backend-server ${name}: listening http 0.0.0.0:${httpPort} udp 0.0.0.0:${udpPort}\n`);
  }
}
http.listen(httpPort, '0.0.0.0', listening);
udp.bind(udpPort, '0.0.0.0', listening);

function shutdown(signal: string): void {
  process.stdout.write(`backend-server ${name}: ${signal}, stopping\n`);
  udp.close();
  http.closeAllConnections();
  http.close(() => process.exit(0));
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
