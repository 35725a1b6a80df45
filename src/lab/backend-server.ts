/*
 * A lab backend pod's server, started by `vipr lab up` inside the backend's namespace:
 *   HTTP on TCP :80   any path → `<name>\n`; `GET /whoami` → `<name> <client ip>:<port>\n`
 *                     (the address the server saw: shows whether the client's source survived NAT;
 *                     an IPv6 client as `[ip]:port`)
 *   UDP on :5353      any datagram → `<name>`; the datagram `whoami` → `<name> <client ip>:<port>`
 * on 0.0.0.0 and/or :: (`--families`, default ipv4): one socket per family, the IPv6 one IPv6-only,
 * so an IPv4 client is seen as itself, never as `::ffff:a.b.c.d`.
 * Keep-alive is allowed, so one client connection may carry many requests. Nothing is logged per
 * request (benchmarks run through these); the one `listening` line is what `up` waits for.
 *
 * SIGUSR1 makes the server drain, as a pod leaving service does: it still answers, but every
 * answer carries `Connection: close`, so keep-alive clients finish their request and reconnect
 * (through the Service, to another endpoint) instead of being cut off. SIGUSR2 ends draining.
 * The disruption soak (src/bench/disruption.ts) sends these as it rolls endpoints.
 *
 * usage: node backend-server.js --name be1 [--http-port 80] [--udp-port 5353] [--families ipv4,ipv6]
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createSocket, type Socket } from 'node:dgram';
import { parseArgs } from 'node:util';
import { joinHostPort } from '../model/ip.js';

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
    families: { type: 'string' },
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
const families = (values.families ?? 'ipv4').split(',');
if (families.length === 0 || families.some((f) => f !== 'ipv4' && f !== 'ipv6')) {
  process.stderr.write(`backend-server: --families must list ipv4 and/or ipv6, got '${values.families}'\n`);
  process.exit(2);
}
/** The wildcard address of each family served: 0.0.0.0, ::. */
const binds = families.map((f) => (f === 'ipv4' ? '0.0.0.0' : '::'));

let draining = false;
process.on('SIGUSR1', () => {
  draining = true;
});
process.on('SIGUSR2', () => {
  draining = false;
});

function answer(req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0];
  const peer = req.socket.remoteAddress === undefined ? '?:?' : joinHostPort(req.socket.remoteAddress, req.socket.remotePort ?? '?');
  const body = path === '/whoami' ? `${name} ${peer}\n` : `${name}\n`;
  if (draining) res.setHeader('connection', 'close');
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
  res.end(req.method === 'HEAD' ? undefined : body);
}

function fail(what: string, err: Error): never {
  process.stderr.write(`backend-server ${name}: ${what}: ${err.message}\n`);
  process.exit(1);
}

const https = binds.map((bind) => {
  const http = createServer(answer);
  http.on('error', (err) => fail(`http ${joinHostPort(bind, httpPort)}`, err));
  return http;
});
const udps: Socket[] = binds.map((bind) => {
  const udp = createSocket({ type: bind === '::' ? 'udp6' : 'udp4', ipv6Only: bind === '::' });
  udp.on('message', (msg, rinfo) => {
    const reply = msg.toString('utf8').trim() === 'whoami' ? `${name} ${joinHostPort(rinfo.address, rinfo.port)}` : name;
    udp.send(reply, rinfo.port, rinfo.address);
  });
  udp.on('error', (err) => fail(`udp ${joinHostPort(bind, udpPort)}`, err));
  return udp;
});

let pending = 2 * binds.length;
function listening(): void {
  pending -= 1;
  if (pending === 0) {
    const http = binds.map((b) => joinHostPort(b, httpPort)).join(' ');
    const udp = binds.map((b) => joinHostPort(b, udpPort)).join(' ');
    process.stdout.write(`backend-server ${name}: listening http ${http} udp ${udp}\n`);
  }
}
binds.forEach((bind, i) => {
  https[i]?.listen({ port: httpPort, host: bind, ipv6Only: bind === '::' }, listening);
  udps[i]?.bind(udpPort, bind, listening);
});

function shutdown(signal: string): void {
  process.stdout.write(`backend-server ${name}: ${signal}, stopping\n`);
  for (const udp of udps) udp.close();
  let open = https.length;
  for (const http of https) {
    http.closeAllConnections();
    http.close(() => {
      open -= 1;
      if (open === 0) process.exit(0);
    });
  }
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
