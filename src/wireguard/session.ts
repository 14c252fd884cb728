// A peer's transport sessions as its owning worker holds them (whitepaper §5.4.6, §6.1): the
// previous, current and next keypairs, their rotation, and the freshness rules that decide when to
// ask the control thread for a new handshake. Sans-IO: time is a parameter.
import {
  KEEPALIVE_TIMEOUT_MS,
  REJECT_AFTER_TIME_MS,
  REKEY_AFTER_MESSAGES,
  REKEY_AFTER_TIME_MS,
  REKEY_TIMEOUT_MS,
} from './constants.ts';
import { REJECT_AFTER_MESSAGES_NUMBER, ReplayWindow } from './replay.ts';

/** REKEY_AFTER_MESSAGES as a number (send counters are safe integers, far below it). */
const REKEY_AFTER_MESSAGES_NUMBER = Number(REKEY_AFTER_MESSAGES);

/** What a completed handshake hands to the worker. */
export interface KeypairMaterial {
  readonly localIndex: number;
  readonly remoteIndex: number;
  readonly sendKey: Uint8Array;
  readonly receiveKey: Uint8Array;
  readonly isInitiator: boolean;
  readonly createdAt: number;
}

export interface Keypair extends KeypairMaterial {
  sendCounter: number;
  readonly replay: ReplayWindow;
  /**
   * remoteIndex as a signed 32-bit integer (the same four bytes on the wire). V8 keeps it a small
   * integer; a u32 of 2^31 or more is a double that gets boxed in a fresh heap number per packet.
   */
  readonly remoteIndexInt32: number;
}

export class PeerSessions {
  previous: Keypair | null = null;
  current: Keypair | null = null;
  next: Keypair | null = null;

  /**
   * Installs a freshly derived keypair. The initiator may use it at once; the responder keeps it as
   * `next` until the initiator's first transport packet confirms it (whitepaper §5.4.6).
   * Returns the local indexes of keypairs dropped by the rotation.
   */
  install(material: KeypairMaterial): number[] {
    const keypair: Keypair = { ...material, sendCounter: 0, replay: new ReplayWindow(), remoteIndexInt32: material.remoteIndex | 0 };
    const dropped: number[] = [];
    const drop = (k: Keypair | null): void => {
      if (k !== null) dropped.push(k.localIndex);
    };
    if (material.isInitiator) {
      if (this.next !== null) {
        drop(this.previous);
        drop(this.current);
        this.previous = this.next;
        this.next = null;
      } else {
        drop(this.previous);
        this.previous = this.current;
      }
      this.current = keypair;
    } else {
      drop(this.next);
      drop(this.previous);
      this.next = keypair;
      this.previous = null;
    }
    return dropped;
  }

  /**
   * Should be called after a packet authenticated with `keypair`: a packet on `next` confirms it
   * and makes it current. Returns true when that rotation happened (staged packets can now go).
   */
  confirm(keypair: Keypair): boolean {
    if (keypair !== this.next) return false;
    this.previous = this.current;
    this.current = keypair;
    this.next = null;
    return true;
  }

  /** The keypair to send with, or null when a handshake is needed first. */
  sendingKeypair(now: number): Keypair | null {
    const k = this.current;
    if (k === null) return null;
    if (now - k.createdAt >= REJECT_AFTER_TIME_MS || k.sendCounter >= REJECT_AFTER_MESSAGES_NUMBER) return null;
    return k;
  }

  /** A keypair may authenticate received packets only while younger than REJECT_AFTER_TIME. */
  static isReceivable(keypair: Keypair, now: number): boolean {
    return now - keypair.createdAt < REJECT_AFTER_TIME_MS;
  }

  /** wireguard-go keepKeyFreshSending: the initiator rekeys after REKEY_AFTER_TIME or _MESSAGES. */
  needsRekeyAfterSend(now: number): boolean {
    const k = this.current;
    if (k === null) return false;
    return k.isInitiator && (k.sendCounter > REKEY_AFTER_MESSAGES_NUMBER || now - k.createdAt > REKEY_AFTER_TIME_MS);
  }

  /**
   * wireguard-go keepKeyFreshReceiving: an initiator whose session is about to be rejected starts a
   * handshake when it receives, so the responder need not (the responder would race it).
   */
  needsRekeyAfterReceive(now: number): boolean {
    const k = this.current;
    if (k === null) return false;
    return k.isInitiator && now - k.createdAt > REJECT_AFTER_TIME_MS - KEEPALIVE_TIMEOUT_MS - REKEY_TIMEOUT_MS;
  }

  /** Forgets every keypair; returns their local indexes. */
  clear(): number[] {
    const dropped = [this.previous, this.current, this.next].filter((k) => k !== null).map((k) => k.localIndex);
    this.previous = this.current = this.next = null;
    return dropped;
  }
}
