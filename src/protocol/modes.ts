// File-mode arithmetic of the `mode` extension (docs/protocol.md, "mode"): the `!S!MF`
// payload both ways, and the bits a receiver gives a file. Used by the filestream receiver
// and sender and by the server's input cache.
import { ProtocolError } from './errors.js';

/** `0o755` → `"755"`: the `!S!MF` payload. */
export function formatMode(mode: number): string {
  return (mode & 0o777).toString(8).padStart(3, '0');
}

/** Parses an `!S!MF` payload: 1 to 4 octal digits. Throws `bad-number`. */
export function parseMode(payload: Uint8Array | string, name: string): number {
  const text = (
    typeof payload === 'string' ? payload : Buffer.from(payload).toString('latin1')
  ).trim();
  if (!/^[0-7]{1,4}$/.test(text)) {
    throw new ProtocolError(
      'bad-number',
      `the mode of ${JSON.stringify(name)} as 1 to 4 octal digits`,
      JSON.stringify(text.slice(0, 20)),
    );
  }
  return Number.parseInt(text, 8);
}

/**
 * The permission bits a receiver gives a file whose sender had `wireMode`, when the file
 * was created with `created` (0o666 less the receiver's umask): the sender's read and write
 * bits as far as the umask allows them, and an execute bit wherever the sender had it and
 * the matching read bit is allowed. Never setuid, setgid or sticky. With umask 022:
 * 755 → 755, 644 → 644, 777 → 755, 4755 → 755; with umask 077: 755 → 700.
 */
export function applicableMode(wireMode: number, created: number): number {
  const allowed = created & 0o666;
  const exec = (allowed & 0o444) >> 2;
  return (wireMode & 0o666 & allowed) | (wireMode & 0o111 & exec);
}
