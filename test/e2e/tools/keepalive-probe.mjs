// One long-lived TCP connection: sends `GET /whoami` every INTERVAL ms over the same socket and
// prints `<n> <answer>` per response (the answer names the backend and the client port). Any
// error, or a second connection, is printed as `ERROR ...` and ends the probe with exit 1.
// Usage: node keepalive-probe.mjs HOST PORT INTERVAL_MS
import net from 'node:net';

const [host, port, interval] = process.argv.slice(2);
const sock = net.connect({ host, port: Number(port) });
let n = 0;
let buf = '';
sock.setNoDelay(true);
const fail = (msg) => {
  process.stdout.write(`ERROR ${msg}\n`);
  process.exit(1);
};
sock.on('error', (e) => fail(e.message));
sock.on('close', () => fail('connection closed'));
sock.on('data', (d) => {
  buf += d.toString('utf8');
  // Responses are small: headers, blank line, a body of one line.
  for (;;) {
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const len = Number(/content-length: (\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
    if (buf.length < end + 4 + len) return;
    const body = buf.slice(end + 4, end + 4 + len).trim();
    buf = buf.slice(end + 4 + len);
    process.stdout.write(`${++n} ${body}\n`);
  }
});
sock.on('connect', () => {
  const send = () => sock.write(`GET /whoami HTTP/1.1\r\nHost: ${host}\r\nConnection: keep-alive\r\n\r\n`);
  send();
  setInterval(send, Number(interval));
});
process.on('SIGTERM', () => process.exit(0));
