// persistent-keepalive keeps a NAT mapping alive (whitepaper §6.5, wg(8) "PersistentKeepalive"):
// two clients behind one MASQUERADE NAT with a 5 s conntrack UDP timeout, one with keepalive 2 s
// and one without (the control); after the control's mapping has expired the public side can still
// reach the first client and can no longer reach the control.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  conntrackUdp, endpointOf, generateKeyPair, labTest, makeNat, ping, requireRoot, upTunnel, waitFor, wg, wgSetconf,
} from './lab.ts';
import type { KeyPair, Lab, Netns, WgImpl } from './lab.ts';

await requireRoot();

const UDP_TIMEOUT_S = 5;
/** Whitepaper §6.5 (wireguard-go's KeepaliveTimeout): a passive keepalive follows received data after this. */
const KEEPALIVE_TIMEOUT_S = 10;
const PUBLIC_ADDRESS = '198.18.10.1';
const PUBLIC_PORT = 51820;
const CLIENT_PORT = 51821;
const TUNNEL_PUBLIC = '198.19.0.1';

type Client = { readonly ns: Netns; readonly address: string; readonly tunnel: string; readonly keys: KeyPair };

function tunnelOf(index: number): string {
  return `198.19.0.${10 + index}`;
}

async function startClient(lab: Lab, impl: WgImpl, router: Netns, index: number, keys: KeyPair, publicKeys: KeyPair,
  keepalive: number | undefined): Promise<Client> {
  const ns = await lab.namespace(`c${index}`);
  const subnet = 20 + index;
  const address = `198.18.${subnet}.1`;
  await lab.veth(router, ns, { labelA: `r${index}`, labelB: `c${index}v`,
    addressesA: [`198.18.${subnet}.254/24`], addressesB: [`${address}/24`] });
  await ns.ip(['route', 'add', 'default', 'via', `198.18.${subnet}.254`]);
  const ifname = lab.name(`c${index}w`);
  await impl.start(ns, ifname);
  await wgSetconf(ns, ifname, {
    privateKey: keys.privateKey,
    listenPort: CLIENT_PORT,
    peers: [{ publicKey: publicKeys.publicKey, endpoint: endpointOf(PUBLIC_ADDRESS, PUBLIC_PORT),
      allowedIps: [`${TUNNEL_PUBLIC}/32`], ...(keepalive === undefined ? {} : { persistentKeepalive: keepalive }) }],
  });
  const tunnel = tunnelOf(index);
  await upTunnel(ns, ifname, [`${tunnel}/24`]);
  return { ns, address, tunnel, keys };
}

labTest('persistent-keepalive holds a NAT mapping open; without it the mapping expires', 60_000,
  async (lab, impls) => {
    const [publicSide, router] = await Promise.all([lab.namespace('pub'), lab.namespace('nat')]);
    const outside = await lab.veth(publicSide, router, { labelA: 'pv', labelB: 'ro',
      addressesA: [`${PUBLIC_ADDRESS}/24`], addressesB: ['198.18.10.254/24'] });
    await makeNat(router, { outsideDev: outside.b.dev, randomFully: true, udpTimeoutS: UDP_TIMEOUT_S });

    // The public side starts first, so the clients' first handshake (sent at once by the one with
    // keepalive) finds it listening. It knows no endpoints: it can only answer where the NAT made
    // its clients appear.
    const [publicKeys, keptKeys, controlKeys] = await Promise.all([generateKeyPair(), generateKeyPair(), generateKeyPair()]);
    const publicIf = lab.name('pw');
    await impls.a.start(publicSide, publicIf);
    await wgSetconf(publicSide, publicIf, {
      privateKey: publicKeys.privateKey,
      listenPort: PUBLIC_PORT,
      peers: [{ publicKey: keptKeys.publicKey, allowedIps: [`${tunnelOf(1)}/32`] },
        { publicKey: controlKeys.publicKey, allowedIps: [`${tunnelOf(2)}/32`] }],
    });
    await upTunnel(publicSide, publicIf, [`${TUNNEL_PUBLIC}/24`]);
    const kept = await startClient(lab, impls.b, router, 1, keptKeys, publicKeys, 2);
    const control = await startClient(lab, impls.b, router, 2, controlKeys, publicKeys, undefined);

    for (const client of [kept, control]) {
      const result = await ping(client.ns, TUNNEL_PUBLIC, { deadlineS: 8 });
      assert.equal(result.received, result.transmitted, `${client.address} through the NAT: ${result.errors}\n` +
        `conntrack:\n${(await conntrackUdp(router)).join('\n')}\npublic side:\n${await wg(publicSide, ['show', publicIf])}`);
    }
    const lastDataReceived = Date.now();
    const mappingOf = async (client: Client): Promise<string | undefined> =>
      (await conntrackUdp(router)).find((entry) => entry.includes(`src=${client.address} `));
    assert.ok(await mappingOf(control), 'the control client has a NAT mapping after its ping');

    // The control's last packet is a passive keepalive KEEPALIVE_TIMEOUT after the last data it
    // received (whitepaper §6.5); wait two conntrack timeouts beyond that, then its mapping is gone.
    const quietAt = lastDataReceived + (KEEPALIVE_TIMEOUT_S + 2 * UDP_TIMEOUT_S) * 1000;
    await sleep(quietAt - Date.now());
    await waitFor('the control client\'s NAT mapping to expire', 10_000,
      async () => ((await mappingOf(control)) === undefined ? true : undefined), 250);

    assert.ok(await mappingOf(kept), 'keepalives kept the mapping');
    const reachKept = await ping(publicSide, kept.tunnel);
    assert.equal(reachKept.received, reachKept.transmitted, 'the public side reaches the client with keepalive');
    const reachControl = await ping(publicSide, control.tunnel);
    assert.equal(reachControl.received, 0, 'the public side still reached the client whose mapping expired');

    // The failure was the mapping: once the control speaks again, it is reachable again.
    const reopen = await ping(control.ns, TUNNEL_PUBLIC, { count: 1, deadlineS: 10 });
    assert.equal(reopen.received, 1, 'the control client reopened its mapping');
    const reachAgain = await ping(publicSide, control.tunnel);
    assert.equal(reachAgain.received, reachAgain.transmitted, 'the public side reaches the control again');
  });
