const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/**
 * True for names that can only mean this machine: `localhost` (and `*.localhost`),
 * `127.0.0.0/8`, `::1`. The client starts embedded servers only there; a server bound
 * anywhere else without a token warns that anyone who reaches it runs commands. (An own
 * pattern, not `net.isIP`: its first call compiles Node's IPv6 pattern, about 10 ms.)
 */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost') || h === '::1') return true;
  const v4 = IPV4.exec(h);
  return v4 !== null && v4[1] === '127' && v4.slice(2).every((octet) => Number(octet) <= 255);
}
