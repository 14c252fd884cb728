// Typed errors: one base class, one subclass per failure, each with a stable `code` (ZTGATE_ERR_*).

export class ZtgateError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A system call failed; `errno` is the positive Linux error number. */
export class SyscallError extends ZtgateError {
  readonly errno: number;
  readonly syscall: string;
  constructor(syscall: string, errno: number, detail = '') {
    super('ZTGATE_ERR_SYSCALL', `io: ${syscall} failed: errno ${errno}${detail ? ` (${detail})` : ''}`);
    this.syscall = syscall;
    this.errno = errno;
  }
}

/** Configuration input (CLI flags, UAPI lines, key strings) that cannot be accepted. */
export class ConfigError extends ZtgateError {
  constructor(message: string, options?: ErrorOptions) {
    super('ZTGATE_ERR_CONFIG', message, options);
  }
}

/** A datagram or message that does not parse or authenticate; callers count it and drop it. */
export class ProtocolError extends ZtgateError {
  constructor(message: string, options?: ErrorOptions) {
    super('ZTGATE_ERR_PROTOCOL', message, options);
  }
}
