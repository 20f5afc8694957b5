import t from 'tap';
import * as fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import { closeServer } from '../../../src/servers/http.js';

type Http = typeof import('../../../src/servers/http.js');

t.test("0.0.0.0 is served on both families even where net.ipv6.bindv6only is 1, as Go's listener", async (t) => {
  if (!fs.existsSync('/proc/net/if_inet6')) {
    t.comment('no IPv6 on this machine: nothing to check');
    return;
  }
  // libuv, as Go, clears IPV6_V6ONLY on every IPv6 socket it binds, so the sysctl (the default
  // for sockets that never set the option) changes nothing for `::`.
  const readFileSync = ((path: fs.PathOrFileDescriptor, ...rest: []) =>
    String(path).endsWith('/bindv6only') ? '1\n' : fs.readFileSync(path, ...rest)) as typeof fs.readFileSync;
  const http = await t.mockImport<Http>('../../../src/servers/http.js', { 'node:fs': { ...fs, readFileSync } });
  const srv = await http.listen('test', '0.0.0.0', 0, (_req, res) => res.end('ok'));
  t.teardown(() => closeServer(srv));
  const port = (srv.address() as AddressInfo).port;
  t.equal((srv.address() as AddressInfo).address, '::', 'bound to the dual-stack wildcard');
  t.equal(await (await fetch(`http://127.0.0.1:${port}/`)).text(), 'ok', 'over IPv4');
  t.equal(await (await fetch(`http://[::1]:${port}/`)).text(), 'ok', 'over IPv6');
});
