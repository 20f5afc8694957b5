// A run that dies without cleaning up (SIGKILL: no exit handlers) must not block or leak into
// the next one: the next createCluster takes the LAN over and removes the dead run's leftovers.
import t from 'tap';
import { spawn } from 'node:child_process';
import { createCluster, listLeftovers, cleanupPrefix } from '../../../src/sim/cluster/index.js';

const indexUrl = new URL('../../../src/sim/cluster/index.js', import.meta.url).href;

t.test('leftovers of a killed run are removed by the next run', async (t) => {
  const script = `
    const { createCluster } = await import(${JSON.stringify(indexUrl)});
    const c = await createCluster({ nodes: 2, podsPerNode: 1 });
    process.stdout.write(c.prefix + '\\n');
    setInterval(() => {}, 1 << 30);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  let deadPrefix = '';
  t.teardown(async () => {
    child.kill('SIGKILL');
    if (deadPrefix) await cleanupPrefix(deadPrefix);
  });
  deadPrefix = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /^(fy[a-z0-9]+)\n/.exec(out);
      if (m && m[1]) resolve(m[1]);
    });
    child.once('exit', (code) => reject(new Error(`cluster process exited ${code} before printing its prefix`)));
  });
  t.not((await listLeftovers(deadPrefix)).length, 0, 'the first run built its namespaces');
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
  t.not((await listLeftovers(deadPrefix)).length, 0, 'SIGKILL left the namespaces behind (the case under test)');

  const c = await createCluster({ nodes: 1 });
  t.teardown(() => c.down());
  t.same(await listLeftovers(deadPrefix), [], 'the dead run was cleaned up when the LAN was taken over');
  await c.addPod({ name: 'alive', node: 'node-1' });
  const [r] = await c.probe({ kind: 'node', node: 'node-1' }, { proto: 'tcp', addr: c.pod('alive').ip, port: 8080 });
  t.equal(r?.pod, 'alive', `new cluster works: ${JSON.stringify(r)}`);
  await c.down();
  t.same(await listLeftovers(c.prefix), []);
});
