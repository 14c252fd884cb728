// Where a received datagram came from and arrived on, moved from its recvmmsg metadata into the
// header of the slot it was read into (ring/layout.ts, "Addresses"): the worker's DatagramSource
// reads them there to check and learn the peer's endpoint. Shared by the UDP reader, the workers'
// own receives and their warm-ups, so all of them run one function.
import { DatagramMeta, META_BYTES, META_LOCAL_ADDRESS_BYTE, META_REMOTE_ADDRESS_BYTE } from '../io/udp.ts';
import type { Slab } from '../ring/slab.ts';

/** Copies message `i`'s remote address and port and its local address and interface into `slot`. */
export function storeReceivedAddresses(meta: DatagramMeta, i: number, slab: Slab, slot: number): void {
  slab.setRemote(slot, meta.remoteFamily(i), meta.remotePort(i));
  slab.setLocalIfindex(slot, meta.localIfindex(i));
  const remote = slab.remoteAddressView(slot);
  const local = slab.localAddressView(slot);
  const bytes = meta.bytes;
  const base = i * META_BYTES;
  // An all-zero local address means no pktinfo arrived: the kernel picks the reply's source.
  const hasLocal = meta.localFamily(i) !== 0;
  for (let k = 0; k < 16; k++) {
    remote[k] = bytes[base + META_REMOTE_ADDRESS_BYTE + k]!;
    local[k] = hasLocal ? bytes[base + META_LOCAL_ADDRESS_BYTE + k]! : 0;
  }
}
