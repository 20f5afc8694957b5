/**
 * ebpf mode through the real CLI in a simulated node (its own cgroup, its own bpffs directory):
 * the node reaches a ClusterIP and 127.0.0.1:NodePort, an endpoint change takes effect, a
 * Service without endpoints is refused (also an externalIP from outside: the tc program's RST),
 * the data path keeps working (from the node and from outside) while ferry is down and
 * across its restart (pins), the tc program sits on the node's interfaces (never the host's),
 * and `ferry --cleanup` leaves no pin, link, program, tc filter or clsact qdisc behind.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { scaledMs } from '../../../src/util/timescale.js';
import { run } from '../../../src/util/exec.js';
import { withOneNode } from '../hardening/node.js';
import { SERVICE_CIDR } from '../../../src/sim/cluster/index.js';
import { eventually, NotYet } from '../lib/eventually.js';
import { childEnv, summarize } from '../lib/harness.js';

const FERRY_BIN = join(fileURLToPath(new URL('../../../../', import.meta.url)), 'bin', 'ferry');

t.setTimeout(scaledMs(10 * 60_000));

function serviceYaml(name: string, app: string, type = 'ClusterIP', extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name },
    spec: { type, selector: { app }, ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }], ...extra },
  });
}

const EXTERNAL_IP = '203.0.113.40';
const REUSED_PORT = 40123;

/** From the client: one HTTP/1.0 request per port in argv[2:], each from the same source port. */
const SAME_PORT_CLIENT = `
import socket, sys
addr, src = sys.argv[1], int(sys.argv[2])
for port in sys.argv[3:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(3)
    try:
        s.bind(('', src))
        s.connect((addr, int(port)))
        s.sendall(b'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n')
        data = b''
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        body = data.split(b'\\r\\n\\r\\n', 1)[-1].decode().strip()
        print(port, 'ok', body)
    except Exception as e:
        print(port, 'error', type(e).__name__)
    finally:
        s.close()
`;

t.test('ebpf mode in a simulated node: node → ClusterIP and 127.0.0.1:NodePort, changes, restart, cleanup', async (t) => {
  await withOneNode(t, { mode: 'ebpf', pods: 2 }, async (env) => {
    const c = env.cluster;
    const node = c.nodes[0]!;
    const cgroup = c.cgroupOf({ kind: 'node', node: node.name });
    const pinDir = c.bpffsDirOf(node.name);
    t.ok(cgroup, 'the node has a cgroup of its own');
    await env.kubectl(['apply', '-f', '-'], serviceYaml('web', 'echo-1', 'NodePort'));
    await env.kubectl(['apply', '-f', '-'], serviceYaml('nowhere', 'nothing-matches'));
    await env.kubectl(['apply', '-f', '-'], serviceYaml('nowhere-ext', 'nothing-matches', 'ClusterIP', { externalIPs: [EXTERNAL_IP] }));
    await c.addClientRoute('203.0.113.0/24', node.name);
    const ip = (await env.kubectl(['get', 'svc', 'web', '-o', 'jsonpath={.spec.clusterIP}'])).trim();
    const np = Number(await env.kubectl(['get', 'svc', 'web', '-o', 'jsonpath={.spec.ports[0].nodePort}']));
    const none = (await env.kubectl(['get', 'svc', 'nowhere', '-o', 'jsonpath={.spec.clusterIP}'])).trim();

    // A connection-tracking size of its own (--ebpf-ct-max), the same at the restart below.
    const CT_ARGS = ['--ebpf-ct-max', '32768'];
    env.startFerry(CT_ARGS);
    await env.waitHealthy();
    const r = await env.waitReachable(ip, 80, `node → ClusterIP ${ip}:80`);
    t.equal(r.pod, 'echo-1', 'node → ClusterIP answered by the endpoint');
    t.ok(existsSync(join(pinDir, 'ferry_svc')) && existsSync(join(pinDir, 'link_ferry_connect4')), `maps and links pinned under ${pinDir}`);
    const shown = await run(['bpftool', 'cgroup', 'show', cgroup ?? '']);
    t.match(shown.stdout, /ferry_connect4/, 'the programs are attached to the node\'s cgroup');
    const tcShown = await c.exec(node.netns, ['tc', 'filter', 'show', 'dev', 'eth0', 'ingress'], { allowFailure: true });
    t.match(tcShown.stdout, /handle 0xfe77 ferry_tc_ingres/, `the tc program is on the node's eth0 ingress (${tcShown.stdout.trim()})`);
    const egressShown = await c.exec(node.netns, ['tc', 'filter', 'show', 'dev', 'eth0', 'egress'], { allowFailure: true });
    t.match(egressShown.stdout, /handle 0xfe77 ferry_tc_egress/, `and its egress twin on eth0's egress (${egressShown.stdout.trim()})`);
    t.ok(existsSync(join(pinDir, 'prog_ferry_tc_ingress')) && existsSync(join(pinDir, 'ferry_ct')), 'the tc program and its CT map pinned');
    const ctShown = JSON.parse((await run(['bpftool', '-j', 'map', 'show', 'pinned', join(pinDir, 'ferry_ct')])).stdout) as { max_entries: number };
    t.equal(ctShown.max_entries, 65536, '--ebpf-ct-max 32768: ferry_ct holds two entries per connection');
    const hostTc = await run(['bpftool', '-j', 'net', 'show'], { allowFailure: true });
    t.notMatch(hostTc.stdout, /ferry_tc/, "nothing of ferry's on the host's own interfaces");

    const local = await env.waitReachable('127.0.0.1', np, `node → 127.0.0.1:${np} (NodePort)`);
    t.equal(local.pod, 'echo-1', '127.0.0.1:NodePort from the node answered by the endpoint');
    const nodeIP = await env.waitReachable(node.ip, np, `node → ${node.ip}:${np} (NodePort)`);
    t.equal(nodeIP.pod, 'echo-1', 'nodeIP:NodePort from the node answered by the endpoint');

    const refused = await eventually(
      async () => {
        const x = await env.probe(none, 80);
        if (x.ok || x.error !== 'refused') throw new NotYet(summarize([x]));
        return x;
      },
      { what: `nowhere ${none} refused`, timeoutMs: 30_000 },
    );
    t.equal(refused.error, 'refused', 'a Service without endpoints is refused at once');
    // From outside, to an externalIP (not a node address, so the stack would not answer): the tc
    // program turns the SYN into the RST.
    const fromClient = await eventually(
      async () => {
        const [x] = await c.probe({ kind: 'client' }, { proto: 'tcp', addr: EXTERNAL_IP, port: 80 }, { timeoutMs: 1500 });
        if (!x || x.error !== 'refused') throw new NotYet(summarize(x ? [x] : []));
        return x;
      },
      { what: `client → externalIP ${EXTERNAL_IP}:80 without endpoints refused`, timeoutMs: 30_000 },
    );
    t.equal(fromClient.error, 'refused', 'an externalIP without endpoints is refused for an outside client (RST from the tc program)');

    // What no frontend takes, as kube-proxy's nftables mode: a ClusterIP's other port is refused,
    // an unallocated address in the service CIDR is dropped — by socket LB at connect() (refused,
    // unreachable), by the tc program for a packet from the network (its RST, a drop).
    const parts = ip.split('.').map(Number);
    parts[3] = parts[3]! === 250 ? 251 : 250;
    const unallocated = parts.join('.');
    const allocated = await env.kubectl(['get', 'services', '-A', '-o', 'jsonpath={.items[*].spec.clusterIP}']);
    t.notOk(allocated.split(/\s+/).includes(unallocated), `${unallocated} is not a ClusterIP`);
    const otherPort = await eventually(
      async () => {
        const x = await env.probe(ip, 81);
        if (x.error !== 'refused') throw new NotYet(summarize([x]));
        return x;
      },
      { what: `node → ClusterIP ${ip}:81 (a port it does not serve) refused`, timeoutMs: 30_000 },
    );
    t.equal(otherPort.error, 'refused', `node → ${ip}:81, a port the ClusterIP does not serve: ECONNREFUSED from connect()`);
    const unalloc = await env.probe(unallocated, 80);
    t.equal(unalloc.error, 'unreachable', `node → ${unallocated}:80, unallocated in the service CIDR: EHOSTUNREACH from connect(), no packet sent (${summarize([unalloc])})`);
    await c.addClientRoute(SERVICE_CIDR, node.name);
    const [outsideOther] = await c.probe({ kind: 'client' }, { proto: 'tcp', addr: ip, port: 81 }, { timeoutMs: 1500 });
    t.equal(outsideOther?.error, 'refused', `client → ${ip}:81 through the node: refused by the tc program (${summarize(outsideOther ? [outsideOther] : [])})`);
    const [outsideUnalloc] = await c.probe({ kind: 'client' }, { proto: 'tcp', addr: unallocated, port: 80 }, { timeoutMs: 1500 });
    t.equal(outsideUnalloc?.error, 'timeout', `client → ${unallocated}:80 through the node: dropped by the tc program (${summarize(outsideUnalloc ? [outsideUnalloc] : [])})`);
    const [outsideServed] = await c.probe({ kind: 'client' }, { proto: 'tcp', addr: ip, port: 80 }, { timeoutMs: 1500 });
    t.ok(outsideServed?.ok, `…while the ClusterIP's own port answers the client (${summarize(outsideServed ? [outsideServed] : [])})`);

    // An interface that appears while ferry runs (in the node's namespace, made here) gets the tc
    // program when the kernel's link notification arrives: no change of the cluster comes first.
    await c.exec(node.netns, ['ip', 'link', 'add', 'fynew0', 'type', 'veth', 'peer', 'name', 'fynew1']);
    for (const dev of ['fynew0', 'fynew1']) {
      await eventually(
        async () => {
          const shown = await c.exec(node.netns, ['tc', 'filter', 'show', 'dev', dev, 'ingress'], { allowFailure: true });
          if (!/handle 0xfe77 ferry_tc_ingres/.test(shown.stdout)) throw new NotYet(shown.stdout.trim() || shown.stderr.trim() || 'no filter');
        },
        { what: `the tc program on ${dev}, made after ferry started, with no sync asked for`, timeoutMs: 10_000 },
      );
    }
    t.match(env.log(), /tc program attached to new interfaces.*fynew0.*link notification/, 'attached on the link notification, and logged');
    await env.kubectl(['patch', 'svc', 'web', '-p', JSON.stringify({ spec: { selector: { app: 'echo-2' } } })]);
    await eventually(
      async () => {
        const x = await env.probe(ip, 80);
        if (x.pod !== 'echo-2') throw new NotYet(summarize([x]));
      },
      { what: 'after the selector change echo-2 answers', timeoutMs: 30_000 },
    );
    const after = await c.probe({ kind: 'node', node: node.name }, { proto: 'tcp', addr: ip, port: 80 }, { count: 10 });
    t.same([...new Set(after.map((x) => x.pod))], ['echo-2'], `only the new endpoint answers: ${summarize(after)}`);

    // Connection tracking, not a reverse map: a connection from a client port whose previous
    // connection (to another frontend on the same endpoint, no SNAT) is still tracked must get
    // its own translation — a stale reply entry would answer it from the old frontend.
    await env.kubectl(['apply', '-f', '-'], serviceYaml('reuse-a', 'echo-1', 'NodePort', { externalTrafficPolicy: 'Local' }));
    await env.kubectl(['apply', '-f', '-'], serviceYaml('reuse-b', 'echo-1', 'NodePort', { externalTrafficPolicy: 'Local' }));
    const npA = Number(await env.kubectl(['get', 'svc', 'reuse-a', '-o', 'jsonpath={.spec.ports[0].nodePort}']));
    const npB = Number(await env.kubectl(['get', 'svc', 'reuse-b', '-o', 'jsonpath={.spec.ports[0].nodePort}']));
    for (const p of [npA, npB]) {
      await eventually(
        async () => {
          const [x] = await c.probe({ kind: 'client' }, { proto: 'tcp', addr: node.ip, port: p }, { timeoutMs: 1500 });
          if (!x?.ok) throw new NotYet(summarize(x ? [x] : []));
        },
        { what: `client → ${node.ip}:${p} answers`, timeoutMs: 30_000 },
      );
    }
    const reuse = await c.exec(c.clientNetns, ['python3', '-c', SAME_PORT_CLIENT, node.ip, String(REUSED_PORT), String(npA), String(npB), String(npA)], { allowFailure: true, timeoutMs: 20_000 });
    const lines = reuse.stdout.trim().split('\n');
    t.equal(lines.length, 3, `three connections from client port ${REUSED_PORT} ran (${reuse.stdout.trim()} ${reuse.stderr.trim()})`);
    for (const l of lines) {
      t.match(l, new RegExp(`^\\d+ ok echo-1 ${c.clientIP.replace(/\./g, '\\.')}:${REUSED_PORT}$`), `from client port ${REUSED_PORT}, one after the other to NodePorts ${npA}, ${npB}, ${npA}: each answered by echo-1, client address kept (${l})`);
    }

    // Restart: probes run while ferry is stopped, absent and started again, from the node (socket
    // LB) and from outside (the tc program, NodePort with masquerade).
    const viaTc = await eventually(
      async () => {
        const [x] = await c.probe({ kind: 'client' }, { proto: 'tcp', addr: node.ip, port: np }, { timeoutMs: 1500 });
        if (!x?.ok || x.pod !== 'echo-2') throw new NotYet(summarize(x ? [x] : []));
        return x;
      },
      { what: `client → ${node.ip}:${np} answered by echo-2`, timeoutMs: 30_000 },
    );
    t.equal(viaTc.pod, 'echo-2', 'the outside client reaches the NodePort through the tc program');
    // Masquerade in the tc program: a source port outside the node's ephemeral range (never a tuple
    // the node's own sockets could pick), and — the echo server closing first — the translated
    // tuple held in ferry_ct as TIME_WAIT, so no other client gets it while the endpoint's
    // TIME_WAIT socket would refuse its SYN.
    const eph = (await c.exec(node.netns, ['cat', '/proc/sys/net/ipv4/ip_local_port_range'])).stdout.trim().split(/\s+/).map(Number);
    const snatPort = Number(viaTc.seen?.split(':').pop());
    t.equal(viaTc.seenIP, node.ip, `the endpoint saw the node's address (${viaTc.seen})`);
    t.ok(snatPort >= 1024 && (snatPort < eph[0]! || snatPort > eph[1]!), `SNAT source port ${snatPort} is outside the node's ephemeral range ${eph.join('-')}`);
    const ct = JSON.parse((await run(['bpftool', '-j', 'map', 'dump', 'pinned', join(pinDir, 'ferry_ct')])).stdout) as { formatted?: { value?: { state?: number; dir?: number; sport?: number } } }[];
    const held = ct.filter((e) => e.formatted?.value?.state === 4 && e.formatted.value.dir === 0);
    t.ok(held.length > 0, `a forward entry of a connection the endpoint closed is held as TIME_WAIT (states: ${[...new Set(ct.map((e) => `${e.formatted?.value?.dir}/${e.formatted?.value?.state}`))].join(',')})`);
    const stop = new AbortController();
    const stream = c.probeStream({ kind: 'node', node: node.name }, { proto: 'tcp', addr: ip, port: 80 }, { signal: stop.signal, intervalMs: 50, timeoutMs: 2000 });
    const outside = c.probeStream({ kind: 'client' }, { proto: 'tcp', addr: node.ip, port: np }, { signal: stop.signal, intervalMs: 50, timeoutMs: 2000 });
    await new Promise((res) => setTimeout(res, 500));
    await env.stopFerry();
    await new Promise((res) => setTimeout(res, 1500));
    env.startFerry(CT_ARGS);
    await env.waitHealthy();
    await new Promise((res) => setTimeout(res, 1500));
    stop.abort();
    const rs = await stream;
    const ors = await outside;
    t.ok(rs.length >= 10, `the probe ran through the restart (${rs.length} requests)`);
    t.equal(rs.filter((x) => !x.ok).length, 0, `zero failed requests while ferry was down and restarting; got ${summarize(rs)}`);
    t.ok(ors.length >= 10, `the outside probe ran through the restart (${ors.length} requests)`);
    t.equal(ors.filter((x) => !x.ok).length, 0, `zero failed requests from outside (tc) while ferry was down and restarting; got ${summarize(ors)}`);
    t.match(env.log(), /BPF programs in place.*replaced=8/, 'the restarted ferry swapped its programs into the pinned links');
    t.notMatch(env.log(), /another layout were replaced/, 'the same --ebpf-ct-max: no map replaced at the restart');
    const tcAfter = await c.exec(node.netns, ['tc', 'filter', 'show', 'dev', 'eth0', 'ingress'], { allowFailure: true });
    t.equal((tcAfter.stdout.match(/handle 0xfe77 ferry_tc_ingres/g) ?? []).length, 1, `one ferry tc filter on eth0 after the restart (replaced in place): ${tcAfter.stdout.trim()}`);
    const egressAfter = await c.exec(node.netns, ['tc', 'filter', 'show', 'dev', 'eth0', 'egress'], { allowFailure: true });
    t.equal((egressAfter.stdout.match(/handle 0xfe77 ferry_tc_egress/g) ?? []).length, 1, `one on its egress too: ${egressAfter.stdout.trim()}`);

    // --cleanup removes every pin; the cgroup is left without programs.
    await env.stopFerry();
    const cl = await c.exec(undefined, ['nsenter', `--net=/var/run/netns/${node.netns}`, '--', ...cleanupArgv(pinDir)], { allowFailure: true, env: childEnv() });
    t.equal(cl.exitCode, 0, `ferry --cleanup succeeded (${cl.stderr.trim().split('\n').slice(-3).join(' | ')})`);
    t.notOk(existsSync(pinDir), 'the pin directory is gone');
    const empty = await run(['bpftool', 'cgroup', 'show', cgroup ?? '']);
    t.notMatch(empty.stdout, /ferry_/, `no program attached to the node's cgroup any more (${empty.stdout.trim() || 'empty'})`);
    const tcGone = await c.exec(node.netns, ['bpftool', 'net', 'show'], { allowFailure: true });
    t.notMatch(tcGone.stdout, /ferry_tc/, `no tc program on any interface of the node (${tcGone.stdout.trim()})`);
    const qdisc = await c.exec(node.netns, ['tc', 'qdisc', 'show', 'dev', 'eth0'], { allowFailure: true });
    t.notMatch(qdisc.stdout, /clsact/, `the clsact qdisc ferry made is gone (${qdisc.stdout.trim()})`);
    const gone = await env.probe(ip, 80);
    t.notOk(gone.ok, `the ClusterIP is not translated after cleanup (${summarize([gone])})`);
  });
});

function cleanupArgv(pinDir: string): string[] {
  return ['env', '-u', 'NODE_OPTIONS', process.execPath, FERRY_BIN, '--cleanup', '--ebpf-bpffs-dir', pinDir];
}
