import t from 'tap';
import { chooseMode, ModeUnavailableError, removeForeign } from '../../../src/proxy/daemon.js';
import type { BackendEntry } from '../../../src/proxy/backends.js';
import type { ProxyConfig, ProxyMode } from '../../../src/config/types.js';
import { setLogSink } from '../../../src/util/log.js';

const logs: string[] = [];
setLogSink((l) => logs.push(l));

function table(broken: readonly ProxyMode[]): { backends: Record<ProxyMode, BackendEntry>; probed: ProxyMode[] } {
  const probed: ProxyMode[] = [];
  const entry = (mode: ProxyMode): BackendEntry => ({
    create: async () => {
      throw new Error('not used');
    },
    probe: async () => {
      probed.push(mode);
      if (broken.includes(mode)) throw new Error(`${mode}: Operation not supported`);
    },
    cleanup: async () => undefined,
  });
  return { backends: { nftables: entry('nftables'), iptables: entry('iptables'), ebpf: entry('ebpf'), userspace: entry('userspace') }, probed };
}

const cfg = (mode: ProxyMode, modeFallback?: ProxyMode) => ({ mode, modeFallback }) as unknown as ProxyConfig;

t.test('a working mode is used as configured; the fallback is not probed', async (t) => {
  const { backends, probed } = table([]);
  t.equal(await chooseMode(cfg('iptables', 'userspace'), [4], backends), 'iptables');
  t.same(probed, ['iptables']);
});

t.test('a broken mode without fallback is an error naming the mode and the kernel words', async (t) => {
  const { backends } = table(['nftables']);
  const err = await chooseMode(cfg('nftables'), [4, 6], backends).catch((e: unknown) => e);
  t.type(err, ModeUnavailableError);
  t.match((err as Error).message, /the nftables proxy mode cannot be used on this node: nftables: Operation not supported/);
  t.match((err as Error).message, /--proxy-mode-fallback userspace/);
});

t.test('a broken mode with --proxy-mode-fallback userspace switches, loudly', async (t) => {
  const { backends, probed } = table(['nftables']);
  logs.length = 0;
  t.equal(await chooseMode(cfg('nftables', 'userspace'), [4], backends), 'userspace');
  t.same(probed, ['nftables', 'userspace']);
  t.match(logs.join('\n'), /^E.*falling back to userspace mode/m, 'an error-level log line says so');
});

t.test('a broken fallback fails too', async (t) => {
  const { backends } = table(['nftables', 'userspace']);
  await t.rejects(chooseMode(cfg('nftables', 'userspace'), [4], backends), /userspace: Operation not supported/);
});

t.test('at start every entry removes what its mode left for the running one; a failing step is logged and contained', async (t) => {
  const { backends } = table([]);
  const asked: string[] = [];
  backends.nftables.removeForeign = async (running) => (asked.push(`nftables for ${running}`), ['nftables table ip ferry']);
  backends.iptables.removeForeign = async (running) => {
    asked.push(`iptables for ${running}`);
    throw new Error('iptables-save: not found');
  };
  backends.ebpf.removeForeign = async (running) => (asked.push(`ebpf for ${running}`), []);
  logs.length = 0;
  await removeForeign('userspace', cfg('userspace'), backends);
  t.same(asked, ['nftables for userspace', 'iptables for userspace', 'ebpf for userspace'], 'every entry asked, past the one that failed');
  t.match(logs.join('\n'), /^I.*removed what the nftables mode \(or kube-proxy\) left behind removed="nftables table ip ferry"/m);
  t.match(logs.join('\n'), /^W.*could not check for or remove what the iptables mode left behind.*iptables-save: not found/m);
  t.notMatch(logs.join('\n'), /ebpf mode/, 'nothing said where nothing was removed');
});
