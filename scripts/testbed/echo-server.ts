/**
 * A stand-in server for the test bed's own specs: it greets each connection with one line
 * naming the host (`<name> <address>:<port>\n`) and then echoes every byte back, so a spec can
 * tell which host answered (isolation) and time a round trip (link shaping) without needing
 * rakeserver.
 *
 *   node --import tsx scripts/testbed/echo-server.ts --host 10.77.0.11 --port 6238 --name host1
 */
import { createServer } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    name: { type: 'string', default: 'echo' },
  },
});
const host = values.host;
const port = Number(values.port);

const server = createServer((socket) => {
  socket.on('error', () => socket.destroy());
  socket.write(`${values.name} ${host}:${port}\n`);
  socket.pipe(socket);
});
server.on('error', (err) => {
  console.error(`echo-server: ${err.message}`);
  process.exit(1);
});
server.listen(port, host, () => {
  console.log(`echo-server ${values.name} listening on ${host}:${port}`);
});
process.on('SIGTERM', () => {
  server.close();
  process.exit(0);
});
