// `ztgate netcheck` against Debian's coturn inside the lab: a "public" namespace runs coturn on two
// addresses (two STUN server addresses), a client namespace sits behind a MASQUERADE NAT namespace.
// Behind plain MASQUERADE Linux keeps the source port for every destination (endpoint-independent
// mapping, RFC 4787 §4.1); with --random-fully each new flow gets a random port
// (endpoint-dependent). Wrong TURN credentials and dropped outbound UDP are reported, not crashed on.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCoturn } from './coturn.ts';
import { Lab, makeNat, requireRoot } from './lab.ts';
import type { Netns } from './lab.ts';
import type { NetcheckReport } from '../../src/main/netcheck.ts';

await requireRoot();

const ZTGATE = join(resolve(import.meta.dirname, '..', '..'), 'bin', 'ztgate');
const STUN_A = '198.18.70.1';
const STUN_B = '198.18.70.2';
const NAT_PUBLIC = '198.18.70.254';
const CLIENT = '198.18.71.2';
const TURN_PORT = 3478;
const REST_PORT = 3578;
const USER = { username: 'alice', password: 'correct-horse' };
const REST_SECRET = 'lab-shared-secret';
const RELAY_PORTS = { min: 49_300, max: 49_340 };
const TIMEOUT_MS = 2000;
/** Node's start-up (type stripping included) and the deallocation grace, on a busy 2-core box. */
const STARTUP_ALLOWANCE_MS = 4000;

let lab: Lab;
let client: Netns;
let router: Netns;
let publicSide: Netns;
let outsideDev: string;

before(async () => {
  lab = new Lab();
  [publicSide, router, client] = await Promise.all([lab.namespace('pub'), lab.namespace('nat'), lab.namespace('cli')]);
  const outside = await lab.veth(publicSide, router, { labelA: 'pv', labelB: 'ro',
    addressesA: [`${STUN_A}/24`, `${STUN_B}/24`], addressesB: [`${NAT_PUBLIC}/24`] });
  outsideDev = outside.b.dev;
  await lab.veth(router, client, { labelA: 'ri', labelB: 'cv', addressesA: ['198.18.71.254/24'], addressesB: [`${CLIENT}/24`] });
  await client.ip(['route', 'add', 'default', 'via', '198.18.71.254']);
  await Promise.all([
    startCoturn(publicSide, { listeningIps: [STUN_A, STUN_B], port: TURN_PORT, users: [USER],
      minRelayPort: RELAY_PORTS.min, maxRelayPort: RELAY_PORTS.min + 19 }),
    startCoturn(publicSide, { listeningIps: [STUN_A], port: REST_PORT, authSecret: REST_SECRET,
      minRelayPort: RELAY_PORTS.min + 20, maxRelayPort: RELAY_PORTS.max }),
  ]);
});

after(() => lab.close());

async function setNat(randomFully: boolean): Promise<void> {
  await router.exec('iptables', ['-t', 'nat', '-F', 'POSTROUTING']);
  await router.exec('conntrack', ['-F'], { check: false });
  await makeNat(router, { outsideDev, randomFully });
}

type Run = { readonly report: NetcheckReport; readonly elapsedMs: number; readonly stdout: string };

async function netcheck(args: readonly string[], json = true): Promise<Run> {
  const started = Date.now();
  const result = await client.exec(ZTGATE, ['netcheck', ...args, '--timeout', String(TIMEOUT_MS), ...(json ? ['--json'] : [])],
    { timeoutMs: TIMEOUT_MS + STARTUP_ALLOWANCE_MS + 5000 });
  const elapsedMs = Date.now() - started;
  assert.equal(result.code, 0, result.stderr);
  assert.ok(elapsedMs < TIMEOUT_MS + STARTUP_ALLOWANCE_MS, `netcheck took ${elapsedMs} ms with --timeout ${TIMEOUT_MS}`);
  const report = json ? JSON.parse(result.stdout) as NetcheckReport : (null as unknown as NetcheckReport);
  if (json) {
    assert.equal(result.stdout.trim().split('\n').length, 1, 'exactly one JSON object');
    assert.deepEqual(Object.keys(report).sort(), ['host', 'mapped', 'nat', 'relay', 'relay_error', 'udp']);
  }
  return { report, elapsedMs, stdout: result.stdout };
}

const stunArgs = ['--stun', `${STUN_A}:${TURN_PORT}`, '--stun', `${STUN_B}:${TURN_PORT}`];

/** Relay sockets coturn has open (an allocation that was not deleted keeps one). */
async function openRelaySockets(): Promise<string[]> {
  const sockets = (await publicSide.exec('ss', ['-Hlun'])).stdout.split('\n');
  return sockets.filter((line) => {
    const port = Number((line.split(/\s+/)[3] ?? '').split(':').pop());
    return port >= RELAY_PORTS.min && port <= RELAY_PORTS.max;
  });
}

/**
 * Waits for coturn to close every relay socket. It answers Refresh(LIFETIME 0) at once but closes
 * the socket from its timer a moment later; an allocation we had not deleted would stay for 600 s.
 */
async function assertAllocationsDeleted(): Promise<void> {
  const deadline = Date.now() + 5000;
  let open = await openRelaySockets();
  while (open.length > 0 && Date.now() < deadline) {
    await sleep(100);
    open = await openRelaySockets();
  }
  assert.deepEqual(open, [], 'coturn still holds an allocation');
}

test('behind MASQUERADE: the NAT\'s public address, endpoint-independent, and a relay that is deleted again', async () => {
  await setNat(false);
  const { report } = await netcheck([...stunArgs, '--turn', `${STUN_A}:${TURN_PORT}`,
    '--turn-username', USER.username, '--turn-password', USER.password]);
  assert.equal(report.udp, true);
  const port = Number(report.host.find((host) => host.startsWith(`${CLIENT}:`))?.split(':')[1]);
  assert.ok(port > 0, `host candidates ${report.host} include ${CLIENT}`);
  assert.deepEqual(report.mapped.map((entry) => entry.server).sort(), [`${STUN_A}:${TURN_PORT}`, `${STUN_B}:${TURN_PORT}`]);
  for (const entry of report.mapped) {
    assert.equal(entry.address, `${NAT_PUBLIC}:${port}`, 'plain MASQUERADE keeps the source port');
    assert.ok(entry.rtt_ms >= 0 && entry.rtt_ms < TIMEOUT_MS);
  }
  assert.equal(report.nat, 'endpoint-independent');
  assert.equal(report.relay_error, null);
  assert.equal(report.relay?.server, `${STUN_A}:${TURN_PORT}`);
  const relayPort = Number(report.relay?.address.split(':')[1]);
  assert.ok(report.relay?.address.startsWith(`${STUN_A}:`) || report.relay?.address.startsWith(`${STUN_B}:`), report.relay?.address);
  assert.ok(relayPort >= RELAY_PORTS.min && relayPort <= RELAY_PORTS.min + 19, `relay port ${relayPort} from coturn's range`);
  await assertAllocationsDeleted();

  const human = await netcheck([...stunArgs], false);
  assert.match(human.stdout, /^NAT: +endpoint-independent/m);
  assert.match(human.stdout, new RegExp(`^mapped: +${NAT_PUBLIC.replaceAll('.', '\\.')}:\\d+ as seen by`, 'm'));
});

test('behind MASQUERADE --random-fully: endpoint-dependent', async () => {
  await setNat(true);
  const { report } = await netcheck(stunArgs);
  assert.equal(report.udp, true);
  assert.equal(report.mapped.length, 2);
  for (const entry of report.mapped) assert.ok(entry.address.startsWith(`${NAT_PUBLIC}:`), entry.address);
  assert.notEqual(report.mapped[0]?.address, report.mapped[1]?.address);
  assert.equal(report.nat, 'endpoint-dependent');
  assert.equal(report.relay, null);
  assert.equal(report.relay_error, null, 'no relay was asked for');
});

test('wrong TURN credentials: relay null and relay_error says unauthorized; REST secret credentials work', async () => {
  await setNat(false);
  const wrong = await netcheck([...stunArgs, '--turn', `${STUN_A}:${TURN_PORT}`,
    '--turn-username', USER.username, '--turn-password', 'wrong']);
  assert.equal(wrong.report.udp, true);
  assert.equal(wrong.report.nat, 'endpoint-independent', 'the STUN part is measured regardless');
  assert.equal(wrong.report.relay, null);
  assert.match(wrong.report.relay_error ?? '', /^unauthorized: 401/);

  const rest = await netcheck(['--turn', `${STUN_A}:${REST_PORT}`, '--turn-secret', REST_SECRET]);
  assert.equal(rest.report.relay_error, null);
  assert.ok(rest.report.relay?.address.startsWith(`${STUN_A}:`));
  const badSecret = await netcheck(['--turn', `${STUN_A}:${REST_PORT}`, '--turn-secret', 'not-the-secret']);
  assert.match(badSecret.report.relay_error ?? '', /^unauthorized/);
  await assertAllocationsDeleted();
});

test('outbound UDP dropped: udp false, nothing mapped, within the timeout', async () => {
  await setNat(false);
  await client.exec('iptables', ['-A', 'OUTPUT', '-p', 'udp', '-j', 'DROP']);
  try {
    const { report, elapsedMs } = await netcheck([...stunArgs, '--turn', `${STUN_A}:${TURN_PORT}`,
      '--turn-username', USER.username, '--turn-password', USER.password]);
    assert.equal(report.udp, false);
    assert.deepEqual(report.mapped, []);
    assert.equal(report.nat, 'unknown');
    assert.equal(report.relay, null);
    assert.match(report.relay_error ?? '', /timeout/);
    assert.ok(elapsedMs >= TIMEOUT_MS, `it waited for the deadline (${elapsedMs} ms)`);
  } finally {
    await client.exec('iptables', ['-D', 'OUTPUT', '-p', 'udp', '-j', 'DROP']);
  }
});

test('bad arguments: a clear message and a non-zero exit', async () => {
  const cases = [[], ['--stun', 'x:99999'], ['--turn', STUN_A], ['--stun', STUN_A, '--timeout', 'soon'], ['--stun', STUN_A, '--bogus']];
  const results = await Promise.all(cases.map((args) => client.exec(ZTGATE, ['netcheck', ...args], { check: false })));
  for (const [index, result] of results.entries()) {
    const args = cases[index] ?? [];
    assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, /^ztgate netcheck: .+\nusage:/, args.join(' '));
    assert.equal(result.stdout, '');
  }
});
