// wg-quick(8) drives the implementation as a userspace WireGuard (WG_QUICK_USERSPACE_IMPLEMENTATION):
// `up` starts the daemon (which detaches) and configures it, `down` removes the interface and the
// daemon must then exit.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import {
  endpointOf, generateKeyPair, labTest, ping, requireRoot, uapiSocketPath, upTunnel, waitFor, wgSetconf, wgShowDump,
} from './lab.ts';

await requireRoot();

/** True while `pid` exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

labTest('wg-quick up and down with a config file', 40_000, async (lab, impls) => {
  const [nsA, nsB] = await Promise.all([lab.namespace('a'), lab.namespace('b')]);
  await lab.veth(nsA, nsB, { labelA: 'va', labelB: 'vb', addressesA: ['198.18.0.1/24', 'fd5a::1/64'],
    addressesB: ['198.18.0.2/24', 'fd5a::2/64'] });
  const [keysA, keysB] = await Promise.all([generateKeyPair(), generateKeyPair()]);

  const ifB = lab.name('wb');
  await impls.b.start(nsB, ifB);
  await wgSetconf(nsB, ifB, { privateKey: keysB.privateKey, listenPort: 51821,
    peers: [{ publicKey: keysA.publicKey, allowedIps: ['198.19.0.1/32', 'fd5b::1/128'] }] });
  await upTunnel(nsB, ifB, ['198.19.0.2/24', 'fd5b::2/64']);

  // wg-quick names the interface after the file. No DNS lines: they would touch the host's resolver.
  const ifA = lab.name('wa');
  const config = await lab.tempFile(`${ifA}.conf`, [
    '[Interface]',
    `PrivateKey = ${keysA.privateKey}`,
    'Address = 198.19.0.1/24, fd5b::1/64',
    'ListenPort = 51820',
    'MTU = 1420',
    '',
    '[Peer]',
    `PublicKey = ${keysB.publicKey}`,
    `Endpoint = ${endpointOf('198.18.0.2', 51821)}`,
    'AllowedIPs = 198.19.0.2/32, fd5b::2/128',
    '',
  ].join('\n'));
  const env = { ...process.env, WG_QUICK_USERSPACE_IMPLEMENTATION: impls.a.quickUserspaceImplementation };
  await nsA.exec('wg-quick', ['up', config], { env, timeoutMs: 20_000 });

  const daemonPids = (await nsA.pids()).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(ifA);
    } catch {
      return false;
    }
  });
  assert.equal(daemonPids.length, 1, `one detached daemon serves ${ifA}: pids ${daemonPids.join(' ')}`);
  const [daemonPid = 0] = daemonPids;
  assert.equal((await wgShowDump(nsA, ifA)).iface.listenPort, 51820);
  for (const target of ['198.19.0.2', 'fd5b::2']) {
    const result = await ping(nsA, target);
    assert.equal(result.received, result.transmitted, `ping ${target} over the wg-quick tunnel`);
  }

  await nsA.exec('wg-quick', ['down', config], { env, timeoutMs: 20_000 });
  await waitFor(`daemon ${daemonPid} to exit after wg-quick down`, 10_000,
    () => (alive(daemonPid) ? undefined : true), 100);
  assert.equal(await nsA.linkExists(ifA), false, 'the interface is gone');
  assert.equal(existsSync(uapiSocketPath(ifA)), false, 'the UAPI socket is gone');
});
