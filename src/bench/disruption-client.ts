/*
 * The disruption soak's traffic (src/bench/disruption.ts), run inside a lab's client namespace:
 *   new connections  `--rate` per second, each one `GET /` with `Connection: close`;
 *   long-lived       `--long` keep-alive connections, each sending `GET /` every `--interval-ms`
 *                    after its previous answer; a server that answers with `Connection: close`
 *                    (a draining backend) ends it gracefully and the next request opens a new one.
 * The backends answer with their name. Every request is recorded with when its connection was
 * opened (the moment the datapath chose the backend), when it was sent, and its answer or error;
 * a connection reset while idle is recorded too. On SIGTERM it stops, lets requests in flight
 * finish (or time out), writes the records to `--out` as JSON lines and exits 0.
 *
 * usage: node disruption-client.js --target IP:PORT --out FILE [--rate 100] [--long 8]
 *                                  [--interval-ms 100] [--timeout-ms 3000]
 */
import { connect, type Socket } from 'node:net';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import type { ClientRecord } from './disruption-report.js';

const now = (): number => performance.timeOrigin + performance.now();

interface Answer {
  status: number;
  body: string;
  close: boolean;
}

class RequestError extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

/** One HTTP/1.1 client connection, one request at a time. */
class HttpConnection {
  readonly connStart = now();
  /** The client's port, once connected (0 before). */
  localPort = 0;
  private readonly socket: Socket;
  private buf = Buffer.alloc(0);
  private pending: { resolve: (a: Answer) => void; reject: (e: RequestError) => void; timer: NodeJS.Timeout } | null = null;
  /** Set when the socket can carry no further request; the reason, if it failed. */
  ended: string | null = null;
  onIdleError: ((code: string) => void) | null = null;

  constructor(host: string, port: number) {
    this.socket = connect({ host, port });
    this.socket.setNoDelay(true);
    this.socket.on('connect', () => {
      this.localPort = this.socket.localPort ?? 0;
    });
    this.socket.on('data', (d: Buffer) => this.onData(d));
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.end(err.code ?? 'ERROR'));
    this.socket.on('close', () => this.end('EOF'));
  }

  request(host: string, keepAlive: boolean, timeoutMs: number): Promise<Answer> {
    if (this.ended !== null) return Promise.reject(new RequestError(this.ended));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.end('TIMEOUT'), timeoutMs);
      this.pending = { resolve, reject, timer };
      this.socket.write(`GET / HTTP/1.1\r\nHost: ${host}\r\n${keepAlive ? '' : 'Connection: close\r\n'}\r\n`);
    });
  }

  close(): void {
    this.ended ??= 'closed';
    this.socket.destroy();
  }

  private end(code: string): void {
    const first = this.ended === null;
    if (first) this.ended = code;
    const p = this.pending;
    if (p !== null) {
      this.pending = null;
      clearTimeout(p.timer);
      p.reject(new RequestError(code));
    } else if (first && code !== 'EOF' && code !== 'closed') {
      this.onIdleError?.(code);
    }
    this.socket.destroy();
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    const headEnd = this.buf.indexOf('\r\n\r\n');
    if (headEnd < 0 || this.pending === null) return;
    const head = this.buf.subarray(0, headEnd).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? '')?.[1] ?? NaN);
    let length = 0;
    let close = false;
    for (const line of head.slice(1)) {
      const colon = line.indexOf(':');
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (name === 'content-length') length = Number(value);
      if (name === 'connection') close = value.toLowerCase() === 'close';
    }
    if (this.buf.length < headEnd + 4 + length) return;
    const body = this.buf.subarray(headEnd + 4, headEnd + 4 + length).toString('utf8').trim();
    this.buf = this.buf.subarray(headEnd + 4 + length);
    const p = this.pending;
    this.pending = null;
    clearTimeout(p.timer);
    if (!Number.isFinite(status)) {
      this.end('BAD_RESPONSE');
      p.reject(new RequestError('BAD_RESPONSE'));
      return;
    }
    p.resolve({ status, body, close });
  }
}

function codeOf(err: unknown): string {
  return err instanceof RequestError ? err.code : err instanceof Error ? err.message : String(err);
}

function intArg(value: string | undefined, fallback: number, flag: string, min: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`disruption-client: ${flag} must be a whole number of at least ${min}, got '${value}'\n`);
    process.exit(2);
  }
  return n;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      target: { type: 'string' },
      out: { type: 'string' },
      rate: { type: 'string' },
      long: { type: 'string' },
      'interval-ms': { type: 'string' },
      'timeout-ms': { type: 'string' },
    },
    strict: true,
  });
  const target = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(values.target ?? '');
  if (!target || values.out === undefined) {
    process.stderr.write('disruption-client: --target IP:PORT and --out FILE are required\n');
    process.exit(2);
  }
  const host = target[1] as string;
  const port = Number(target[2]);
  const out = values.out;
  const rate = intArg(values.rate, 100, '--rate', 0);
  const longCount = intArg(values.long, 8, '--long', 0);
  const intervalMs = intArg(values['interval-ms'], 100, '--interval-ms', 1);
  const timeoutMs = intArg(values['timeout-ms'], 3000, '--timeout-ms', 1);

  const records: ClientRecord[] = [];
  let running = true;
  const inFlight = new Set<Promise<void>>();
  const track = (p: Promise<void>): void => {
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
  };

  const oneShot = async (): Promise<void> => {
    const c = new HttpConnection(host, port);
    const reqStart = c.connStart;
    try {
      const a = await c.request(host, false, timeoutMs);
      records.push({ kind: 'new', connStart: c.connStart, reqStart, port: c.localPort, backend: a.status === 200 ? a.body : null, error: a.status === 200 ? null : `HTTP_${a.status}` });
    } catch (err) {
      records.push({ kind: 'new', connStart: c.connStart, reqStart, port: c.localPort, backend: null, error: codeOf(err) });
    } finally {
      c.close();
    }
  };

  const longLived = async (): Promise<void> => {
    let open: HttpConnection | null = null;
    while (running) {
      let c: HttpConnection;
      if (open === null || open.ended !== null) {
        const fresh: HttpConnection = new HttpConnection(host, port);
        fresh.onIdleError = (code) => records.push({ kind: 'idle', connStart: fresh.connStart, reqStart: now(), port: fresh.localPort, backend: null, error: code });
        c = fresh;
      } else {
        c = open;
      }
      open = c;
      const reqStart = now();
      try {
        const a = await c.request(host, true, timeoutMs);
        records.push({ kind: 'long', connStart: c.connStart, reqStart, port: c.localPort, backend: a.status === 200 ? a.body : null, error: a.status === 200 ? null : `HTTP_${a.status}` });
        if (a.close || a.status !== 200) {
          c.close();
          open = null;
        }
      } catch (err) {
        records.push({ kind: 'long', connStart: c.connStart, reqStart, port: c.localPort, backend: null, error: codeOf(err) });
        c.close();
        open = null;
      }
      await sleep(intervalMs);
    }
    open?.close();
  };

  const longs = Array.from({ length: longCount }, () => longLived());
  const every = rate > 0 ? 1000 / rate : 0;
  const started = now();
  let sent = 0;
  const ticker = rate > 0
    ? setInterval(() => {
        // Catch up after a slow tick, so the rate holds on average.
        const due = Math.floor((now() - started) / every);
        for (; sent < due && running; sent++) track(oneShot());
      }, Math.max(1, Math.floor(every)))
    : null;
  process.stdout.write(`disruption-client: running against ${host}:${port}\n`);

  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  running = false;
  if (ticker !== null) clearInterval(ticker);
  await Promise.all([...longs, ...inFlight]);
  writeFileSync(out, records.map((r) => JSON.stringify(r)).join('\n') + (records.length > 0 ? '\n' : ''));
  process.stdout.write(`disruption-client: wrote ${records.length} records\n`);
  process.exit(0);
}

void main();
