// Every WireGuard protocol constant, named once (whitepaper §5.4 and §6, wireguard-go device/constants.go).

/** Noise construction and WireGuard identifier strings (whitepaper §5.4). */
export const CONSTRUCTION = 'Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s';
export const IDENTIFIER = 'WireGuard v1 zx2c4 Jason@zx2c4.com';
export const LABEL_MAC1 = 'mac1----';
export const LABEL_COOKIE = 'cookie--';

/** Message types: the first byte of every WireGuard datagram, followed by three zero bytes. */
export const MESSAGE_INITIATION = 1;
export const MESSAGE_RESPONSE = 2;
export const MESSAGE_COOKIE_REPLY = 3;
export const MESSAGE_TRANSPORT = 4;

/** Sizes in bytes of the fixed-length messages and of the transport header/tag. */
export const MESSAGE_INITIATION_SIZE = 148;
export const MESSAGE_RESPONSE_SIZE = 92;
export const MESSAGE_COOKIE_REPLY_SIZE = 64;
export const MESSAGE_TRANSPORT_HEADER_SIZE = 16;
export const AEAD_TAG_SIZE = 16;
export const MESSAGE_TRANSPORT_MIN_SIZE = MESSAGE_TRANSPORT_HEADER_SIZE + AEAD_TAG_SIZE;
export const KEY_SIZE = 32;
export const TIMESTAMP_SIZE = 12;
export const MAC_SIZE = 16;
export const COOKIE_SIZE = 16;
export const COOKIE_NONCE_SIZE = 24;
/** Transport plaintext is zero-padded to a multiple of this (whitepaper §5.4.6). */
export const PADDING_MULTIPLE = 16;

/** Timers, in milliseconds (whitepaper §6.1). */
export const REKEY_AFTER_TIME_MS = 120_000;
export const REJECT_AFTER_TIME_MS = 180_000;
export const REKEY_ATTEMPT_TIME_MS = 90_000;
export const REKEY_TIMEOUT_MS = 5_000;
/** Up to this much random jitter is added to each handshake retransmission (wireguard-go: 333 ms). */
export const REKEY_TIMEOUT_JITTER_MAX_MS = 334;
export const KEEPALIVE_TIMEOUT_MS = 10_000;
export const COOKIE_REFRESH_TIME_MS = 120_000;
/** Initiations from one peer closer together than this are rejected (wireguard-go HandshakeInitationRate). */
export const HANDSHAKE_INITIATION_RATE_MS = 50;

/** Message-count limits (whitepaper §6.1). */
export const REKEY_AFTER_MESSAGES = 2n ** 60n;
export const REJECT_AFTER_MESSAGES = 2n ** 64n - 2n ** 13n - 1n;

/** Sliding replay window, in packets (RFC 6479 style bitmap; wireguard-go uses 8192 - 64). */
export const REPLAY_WINDOW_SIZE = 8192 - 64;

/** Handshakes pending per second above which the device asks initiators for cookies (under load). */
export const UNDER_LOAD_QUEUE_SIZE = 128;
/** Cookie mode stays on for this long after the load falls (wireguard-go UnderLoadAfterTime). */
export const UNDER_LOAD_AFTER_TIME_MS = 1_000;

/** Packets queued per peer while it has no usable session (wireguard-go QueueStagedSize). */
export const STAGED_QUEUE_SIZE = 128;

/** The largest datagram and inner packet the device handles. */
export const MAX_SEGMENT_SIZE = 65_535;
export const DEFAULT_MTU = 1420;
export const DEFAULT_LISTEN_PORT = 51820;
