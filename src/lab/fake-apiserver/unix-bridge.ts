/*
 * A Unix socket in front of the fake API server's TCP port. A lab node's namespace cannot reach
 * 127.0.0.1 of this one, but it sees the same filesystem: socat in the node listens on the
 * agent's API address and connects to this socket. Closing the server and destroying `sockets`
 * cuts every connection at once, as a network would.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

/** Unix socket → the API server's TCP port; returns the server to close and its open sockets. */
export function startBridge(sockPath: string, apiPort: number): Promise<{ server: Server; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    const up = connect(apiPort, '127.0.0.1');
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.pipe(up).pipe(s);
    up.on('error', () => s.destroy());
    s.on('error', () => up.destroy());
    up.on('close', () => s.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(sockPath, () => resolve({ server, sockets }));
  });
}
