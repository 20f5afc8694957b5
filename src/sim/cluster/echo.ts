/**
 * The pod echo server. Each simulated pod runs one inside its network namespace:
 *   ip netns exec <pod-ns> node dist/src/sim/cluster/echo.js --name <pod> [--port 8080 ...] [--host ::]
 * TCP: HTTP/1.1 (so curl works); UDP: one reply datagram per datagram. Both answer with the one
 * line "<podName> <clientIP>:<clientPort>\n", which is how tests learn who answered and which
 * source address survived the proxy. SCTP is not offered: Node has no SCTP sockets.
 * Prints "ready" on stdout once every listener is bound. Exits when stdin closes, so an echo
 * server never outlives the process that started it. Used by benchmarks too: keep it plain.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createSocket } from 'node:dgram';
import { isIPv4 } from 'node:net';

interface EchoArgs {
  name: string;
  /** Default "::" (IPv4 and IPv6); tests outside a namespace bind to loopback only. */
  host: string;
  ports: number[];
  watchStdin: boolean;
}

function parseArgs(argv: string[]): EchoArgs {
  let name = '';
  let host = '::';
  const ports: number[] = [];
  let watchStdin = true;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--name') name = argv[++i] ?? '';
    else if (a === '--host') host = argv[++i] ?? '';
    else if (a === '--port') ports.push(Number(argv[++i]));
    else if (a === '--no-stdin-watch') watchStdin = false;
    else throw new Error(`echo: unknown argument ${a}`);
  }
  if (!name) throw new Error('echo: --name is required');
  if (ports.length === 0) ports.push(8080);
  for (const p of ports) if (!Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`echo: bad port ${p}`);
  return { name, host, ports, watchStdin };
}

function unmap(addr: string | undefined): string {
  if (!addr) return '?';
  return addr.startsWith('::ffff:') && addr.includes('.') ? addr.slice(7) : addr;
}

function listenTcp(name: string, host: string, port: number): Promise<void> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const body = `${name} ${unmap(req.socket.remoteAddress)}:${req.socket.remotePort}\n`;
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
    req.resume();
  });
  // Probes and curl open and drop connections constantly; a half-sent request is not an error.
  server.on('clientError', (_e, socket) => socket.destroy());
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, ipv6Only: false }, () => resolve());
  });
}

function listenUdp(name: string, host: string, port: number): Promise<void> {
  const sock = createSocket({ type: isIPv4(host) ? 'udp4' : 'udp6', ipv6Only: false });
  sock.on('message', (_msg, rinfo) => {
    sock.send(`${name} ${unmap(rinfo.address)}:${rinfo.port}\n`, rinfo.port, rinfo.address);
  });
  // A reply to a vanished client may come back as ICMP unreachable; that must not end the server.
  sock.on('error', () => undefined);
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ address: host, port }, () => resolve());
  });
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const pending: Promise<void>[] = [];
  for (const port of args.ports) pending.push(listenTcp(args.name, args.host, port), listenUdp(args.name, args.host, port));
  await Promise.all(pending);
  if (args.watchStdin) {
    process.stdin.on('end', () => process.exit(0));
    process.stdin.on('close', () => process.exit(0));
    process.stdin.on('error', () => process.exit(0));
    process.stdin.resume();
  }
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
  process.stdout.write('ready\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
