// The offloaded packet path, byte for byte: TCP both ways at once (IPv4 and IPv6) and UDP
// through a tunnel, with TUN offloads, UDP GSO and UDP GRO on and forced off (ZTGATE_TUN_OFFLOAD,
// ZTGATE_UDP_GSO, ZTGATE_UDP_GRO), for every pairing of ZTGATE_LAB_IMPLS that runs ztgate. UDP
// goes twice: datagrams of varying size, and bursts of equal-sized ones, which a ztgate receiver
// with offloads on writes to its TUN device coalesced (USO), so those must arrive whole and in order.
// The payloads come from a keyed stream cipher, so any lost, duplicated, reordered or corrupted
// byte changes the digest each end reports.

import assert from 'node:assert/strict';
import { createCipheriv, createHash } from 'node:crypto';
import { buildPair, labTest, linkStats, requireRoot, waitFor } from './lab.ts';
import type { Netns, Side } from './lab.ts';

await requireRoot();

const BYTES_EACH_WAY = 24 << 20;
const UDP_DATAGRAMS = 2000;
const UDP_BURSTS = 60;
const UDP_BURST_SIZE = 32;
const KEY_A = '000102030405060708090a0b0c0d0e0f';
const KEY_B = 'f0e0d0c0b0a090807060504030201000';

/** The stream each side sends: AES-128-CTR over zeros under its key (same code as the scripts). */
function digestOfStream(keyHex: string, length: number): string {
  const cipher = createCipheriv('aes-128-ctr', Buffer.from(keyHex, 'hex'), Buffer.alloc(16));
  return createHash('sha256').update(cipher.update(Buffer.alloc(length))).digest('hex');
}

// Both ends send their stream and hash what they receive (half-open sockets, so neither side's
// end cuts the other short), print the digest once both directions are complete, and exit.
const STREAM = `const c=require('node:crypto');const net=require('node:net');
const stream=(k,n)=>c.createCipheriv('aes-128-ctr',Buffer.from(k,'hex'),Buffer.alloc(16)).update(Buffer.alloc(n));
const [role,host,port,sendKey,n]=process.argv.slice(1);
const talk=(s)=>{const h=c.createHash('sha256');let got=0;let result=null;let finished=false;
const done=()=>{if(result!==null&&finished){console.log(result);process.exit(0);}};
s.on('data',(d)=>{h.update(d);got+=d.length;});
s.on('end',()=>{result=JSON.stringify({got,digest:h.digest('hex')});done();});
s.on('finish',()=>{finished=true;done();});
s.write(stream(sendKey,Number(n)),()=>s.end());};
if(role==='server'){net.createServer({allowHalfOpen:true},talk).listen(Number(port),host);}
else{talk(net.connect({port:Number(port),host,allowHalfOpen:true}));}`;

// UDP: the client sends numbered datagrams of varying size, 8 at a time (a pace the tunnel can
// take, so that loss would mean a fault, not load); the server checks each against what
// datagram i must be and reports once nothing came for a second. UDP may lose datagrams under
// load (counted drops), but never deliver a corrupted or foreign one. The servers ask for a 4 MiB
// receive buffer so that a test process the loaded machine leaves waiting drops nothing itself.
const DATAGRAMS = `const d=require('node:dgram');const [role,host,port,n]=process.argv.slice(1);
const body=(i)=>{const b=Buffer.alloc(100+(i*37)%1300);for(let k=0;k<b.length;k++)b[k]=(i*7+k)&255;b.writeUInt32BE(i,0);return b;};
const s=d.createSocket({type:host.includes(':')?'udp6':'udp4',recvBufferSize:4<<20});
if(role==='server'){const seen=new Set();let bad=0;let idle=null;
const report=()=>{console.log(JSON.stringify({good:seen.size,bad}));process.exit(0);};
s.on('message',(m)=>{const i=m.length>=4?m.readUInt32BE(0):-1;if(i>=0&&i<Number(n)&&body(i).equals(m))seen.add(i);else bad++;
clearTimeout(idle);idle=setTimeout(report,1000);});
s.bind(Number(port),host,()=>console.log('ready'));}
else{let i=0;const next=()=>{if(i>=Number(n)){s.close();return;}s.send(body(i++),Number(port),host,()=>(i%8===0?setTimeout(next,2):setImmediate(next)));};next();}`;

// UDP in bursts: the client sends UDP_BURST_SIZE datagrams of one size back to back (the size
// changes from burst to burst), then pauses; the server checks each datagram against what
// datagram i must be, counts those arriving after a later one, and reports once nothing came for
// a second.
const BURSTS = `const d=require('node:dgram');const [role,host,port,bursts,size]=process.argv.slice(1);
const n=Number(bursts)*Number(size);const length=(i)=>600+(Math.floor(i/Number(size))*97)%800;
const body=(i)=>{const b=Buffer.alloc(length(i));for(let k=0;k<b.length;k++)b[k]=(i*13+k*3)&255;b.writeUInt32BE(i,0);return b;};
const s=d.createSocket({type:host.includes(':')?'udp6':'udp4',recvBufferSize:4<<20});
if(role==='server'){const seen=new Set();let bad=0;let late=0;let last=-1;let idle=null;
const report=()=>{console.log(JSON.stringify({good:seen.size,bad,late}));process.exit(0);};
s.on('message',(m)=>{const i=m.length>=4?m.readUInt32BE(0):-1;if(i>=0&&i<n&&body(i).equals(m)){seen.add(i);if(i<last)late++;last=Math.max(last,i);}else bad++;
clearTimeout(idle);idle=setTimeout(report,1000);});
s.bind(Number(port),host,()=>console.log('ready'));}
else{s.connect(Number(port),host,()=>{let i=0;const burst=()=>{if(i>=n){s.close();return;}
for(let k=0;k<Number(size);k++)s.send(body(i++));setTimeout(burst,15);};burst();});}`;

/**
 * Bursts from `client` to `receiver` arrive byte for byte and in order; with `coalesced`, the
 * receiver's TUN device must have taken them in fewer writes than datagrams (USO at work).
 */
async function udpBurstsExact(receiver: Side, client: Netns, address: string, port: number, coalesced: boolean): Promise<void> {
  const count = UDP_BURSTS * UDP_BURST_SIZE;
  const serverProcess = receiver.ns.lab.spawn(receiver.ns, process.execPath,
    ['-e', BURSTS, 'server', address, String(port), String(UDP_BURSTS), String(UDP_BURST_SIZE)]);
  try {
    await waitFor('burst server', 5_000, () => (serverProcess.output().includes('ready') ? true : undefined));
    const before = await linkStats(receiver.ns, receiver.ifname);
    await client.exec(process.execPath, ['-e', BURSTS, 'client', address, String(port), String(UDP_BURSTS), String(UDP_BURST_SIZE)],
      { timeoutMs: 30_000 });
    await serverProcess.exited;
    const after = await linkStats(receiver.ns, receiver.ifname);
    const line = serverProcess.output().split('\n').find((l) => l.startsWith('{')) ?? '{}';
    const { good, bad, late } = JSON.parse(line) as { good: number; bad: number; late: number };
    assert.equal(bad, 0, `corrupted or foreign datagrams over ${address}`);
    assert.equal(late, 0, `datagrams overtaken over ${address}`);
    assert.ok(good >= count * 0.9, `only ${good} of ${count} datagrams arrived over ${address}`);
    const writes = after.rxPackets - before.rxPackets;
    if (coalesced) assert.ok(writes < good, `${good} datagrams took ${writes} TUN writes over ${address}: none coalesced`);
  } finally {
    await serverProcess.stop();
  }
}

async function tcpBothWays(server: Netns, client: Netns, address: string, port: number): Promise<void> {
  const serverProcess = server.lab.spawn(server, process.execPath, ['-e', STREAM, 'server', address, String(port), KEY_B, String(BYTES_EACH_WAY)]);
  try {
    await waitFor(`stream server on ${address}`, 5_000, async () => {
      const { stdout } = await server.exec('ss', ['-H', '-t', '-l', '-n', 'sport', '=', `:${port}`]);
      return stdout.trim() === '' ? undefined : true;
    });
    const result = await client.exec(process.execPath, ['-e', STREAM, 'client', address, String(port), KEY_A, String(BYTES_EACH_WAY)],
      { timeoutMs: 60_000 });
    const atClient = JSON.parse(result.stdout.trim()) as { got: number; digest: string };
    await serverProcess.exited;
    const atServer = JSON.parse(serverProcess.output().trim()) as { got: number; digest: string };
    const expectA = digestOfStream(KEY_A, BYTES_EACH_WAY);
    const expectB = digestOfStream(KEY_B, BYTES_EACH_WAY);
    assert.deepEqual(atServer, { got: BYTES_EACH_WAY, digest: expectA }, `client → server over ${address}`);
    assert.deepEqual(atClient, { got: BYTES_EACH_WAY, digest: expectB }, `server → client over ${address}`);
  } finally {
    await serverProcess.stop();
  }
}

async function udpExact(server: Netns, client: Netns, address: string, port: number): Promise<void> {
  const serverProcess = server.lab.spawn(server, process.execPath, ['-e', DATAGRAMS, 'server', address, String(port), String(UDP_DATAGRAMS)]);
  try {
    await waitFor('datagram server', 5_000, () => (serverProcess.output().includes('ready') ? true : undefined));
    await client.exec(process.execPath, ['-e', DATAGRAMS, 'client', address, String(port), String(UDP_DATAGRAMS)], { timeoutMs: 30_000 });
    await serverProcess.exited;
    const line = serverProcess.output().split('\n').find((l) => l.startsWith('{')) ?? '{}';
    const { good, bad } = JSON.parse(line) as { good: number; bad: number };
    assert.equal(bad, 0, `corrupted or foreign datagrams over ${address}`);
    assert.ok(good >= UDP_DATAGRAMS * 0.9, `only ${good} of ${UDP_DATAGRAMS} datagrams arrived over ${address}`);
  } finally {
    await serverProcess.stop();
  }
}

for (const mode of ['offloads on', 'offloads off'] as const) {
  labTest(`${mode}: TCP both ways at once and UDP arrive byte for byte, IPv4 and IPv6`, 180_000, async (lab, impls) => {
    const switches = ['ZTGATE_TUN_OFFLOAD', 'ZTGATE_UDP_GSO', 'ZTGATE_UDP_GRO'] as const;
    const saved = switches.map((key) => [key, process.env[key]] as const);
    // The daemons take their environment from this process when they start. UDP GRO is off by
    // default; "offloads on" turns it on here so its splitting is checked byte for byte too.
    for (const key of switches) process.env[key] = mode === 'offloads on' ? '1' : '0';
    try {
      const { a, b } = await buildPair(lab, { implA: impls.a, implB: impls.b });
      await tcpBothWays(b.ns, a.ns, b.tunnelV4, 7001);
      await tcpBothWays(a.ns, b.ns, a.tunnelV6, 7002);
      await udpExact(b.ns, a.ns, b.tunnelV4, 7003);
      await udpExact(a.ns, b.ns, a.tunnelV6, 7004);
      const coalesces = (side: Side): boolean => mode === 'offloads on' && side.daemon.implName.startsWith('ztgate');
      await udpBurstsExact(b, a.ns, b.tunnelV4, 7005, coalesces(b));
      await udpBurstsExact(a, b.ns, a.tunnelV6, 7006, coalesces(a));
    } finally {
      for (const [key, value] of saved) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
    }
  }, { when: (pairing) => pairing.name !== 'wireguard-go' });
}
