/**
 * Reads a packet capture (`tcpdump -w`, classic pcap, Ethernet or Linux cooked links) of one
 * host's link and tells, per TCP connection, its exchanges: each turn of the conversation
 * (SYN, or the data one side sent before the other answered) with what it carried, named
 * by the rake headers it starts with (`!E0 +offer`, `!X hello`, `!R0`, `!C`, `!SSI`, ...).
 * A turn of the client's followed by the server's is one round trip the client waited for:
 * the rtt row of scale.ts lists them (issue 20).
 */
import { readFileSync } from 'node:fs';

/** One packet of a TCP connection. */
interface Segment {
  readonly ms: number;
  readonly fromClient: boolean;
  readonly syn: boolean;
  readonly fin: boolean;
  readonly payload: Buffer;
}

/** One side's turn: what it sent before the other side sent anything. */
export interface Turn {
  readonly fromClient: boolean;
  readonly ms: number;
  readonly bytes: number;
  /** `SYN`, or the rake headers it starts with. */
  readonly what: string;
}

/** One TCP connection of the capture, in the order it was opened. */
export interface CapturedConnection {
  readonly clientPort: number;
  readonly turns: readonly Turn[];
  /** Round trips the client waited for: its turns (SYN included) answered by the server. */
  readonly roundTrips: number;
}

/** The connections to `serverPort` in `file`, in the order their SYNs were seen. */
export function readCapture(file: string, serverPort: number): CapturedConnection[] {
  const buf = readFileSync(file);
  if (buf.length < 24) return [];
  const magic = buf.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && buf.readUInt32BE(0) !== 0xa1b2c3d4 && buf.readUInt32BE(0) !== 0xa1b23c4d) {
    throw new Error(`${file}: not a pcap file (magic ${magic.toString(16)})`);
  }
  const nano = (le ? magic : buf.readUInt32BE(0)) === 0xa1b23c4d;
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const link = u32(20);
  const segments = new Map<number, Segment[]>();
  for (let o = 24; o + 16 <= buf.length; ) {
    const ms = u32(o) * 1000 + u32(o + 4) / (nano ? 1e6 : 1e3);
    const caplen = u32(o + 8);
    const frame = buf.subarray(o + 16, o + 16 + caplen);
    o += 16 + caplen;
    let ip: number;
    if (link === 1) ip = frame.readUInt16BE(12) === 0x0800 ? 14 : -1;
    else if (link === 113) ip = frame.readUInt16BE(14) === 0x0800 ? 16 : -1;
    else if (link === 276) ip = frame.readUInt16BE(0) === 0x0800 ? 20 : -1;
    else throw new Error(`${file}: link type ${link} not read (Ethernet or Linux cooked only)`);
    if (ip < 0 || frame.length < ip + 20 || frame[ip + 9] !== 6) continue;
    const ihl = ((frame[ip] ?? 0) & 0x0f) * 4;
    const total = frame.readUInt16BE(ip + 2);
    const tcp = ip + ihl;
    const src = frame.readUInt16BE(tcp);
    const dst = frame.readUInt16BE(tcp + 2);
    const off = ((frame[tcp + 12] ?? 0) >> 4) * 4;
    const flags = frame[tcp + 13] ?? 0;
    const fromClient = dst === serverPort;
    if (!fromClient && src !== serverPort) continue;
    const clientPort = fromClient ? src : dst;
    const payload = frame.subarray(tcp + off, ip + total);
    let list = segments.get(clientPort);
    if (list === undefined) {
      if ((flags & 0x02) === 0) continue; // a connection opened before the capture
      list = [];
      segments.set(clientPort, list);
    }
    list.push({ ms, fromClient, syn: (flags & 0x02) !== 0, fin: (flags & 0x01) !== 0, payload });
  }
  return [...segments].map(([clientPort, list]) => {
    const turns: Turn[] = [];
    let current: { fromClient: boolean; ms: number; parts: Buffer[]; syn: boolean } | undefined;
    const close = () => {
      if (current === undefined) return;
      const bytes = Buffer.concat(current.parts);
      turns.push({
        fromClient: current.fromClient,
        ms: current.ms,
        bytes: bytes.length,
        what: current.syn ? (current.fromClient ? 'SYN' : 'SYN-ACK') : describe(bytes),
      });
      current = undefined;
    };
    for (const s of list) {
      // Pure ACKs and FINs are not turns: nobody waits for them.
      if (!s.syn && s.payload.length === 0) continue;
      if (current !== undefined && (current.fromClient !== s.fromClient || current.syn)) close();
      if (current === undefined) {
        current = { fromClient: s.fromClient, ms: s.ms, parts: [], syn: s.syn };
      }
      current.parts.push(s.payload);
    }
    close();
    let roundTrips = 0;
    for (let i = 1; i < turns.length; i++) {
      if (turns[i - 1]?.fromClient && turns[i]?.fromClient === false) roundTrips++;
    }
    return { clientPort, turns, roundTrips };
  });
}

/** The rake headers a turn's bytes start with, e.g. `!X hello + !R0 + !C` (at most 4). */
function describe(bytes: Buffer): string {
  const names: string[] = [];
  let o = 0;
  while (o + 2 <= bytes.length && names.length < 4) {
    while (bytes[o] === 0x20 && o < bytes.length) o++;
    if (bytes[o] !== 0x21 /* ! */) break;
    const code = bytes.toString('latin1', o, o + 2);
    if (['!N', '!Z', '!M', '!T'].includes(code) && bytes[o + 2] !== 0x20) {
      names.push(code);
      o += 2;
      continue;
    }
    if (o + 64 > bytes.length) {
      names.push(code);
      break;
    }
    const header = bytes.toString('latin1', o, o + 64);
    const m = /^(!S...|!.)(\d+)/.exec(header);
    if (m === null) break;
    const length = code === '!S' && header.startsWith('!SSIF') ? 0 : Number(m[2]);
    let name = `${m[1]?.trim()}${code === '!S' ? '' : m[2]}`;
    if (code === '!X')
      name = `!X ${bytes.toString('utf8', o + 64, o + 64 + Math.min(length, 40)).split(/[ \n]/)[0]}`;
    if (code === '!E' && header.includes('rake/')) name += ' +annex';
    names.push(name);
    o += 64 + length;
  }
  return names.length === 0
    ? 'data'
    : names.join(' ') + (o < bytes.length && names.length >= 4 ? ' …' : '');
}
