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
    // The server ending a response's connection ends ours after what is still queued for the
    // client: destroying it here dropped the tail of a large list the client was slow to read
    // (1,000 EndpointSlices to an agent busy with the Services list), and node-fetch then waited
    // forever for a body cut short.
    up.on('close', () => s.end());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(sockPath, () => resolve({ server, sockets }));
  });
}

/** socat's command line, run in a node's namespace: `127.0.0.1:port` there to the bridge at `sockPath`. */
export function socatToBridgeArgv(port: number, sockPath: string): string[] {
  return ['socat', '-d', '-d', `TCP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr`, `UNIX-CONNECT:${sockPath}`];
}
