// A node `ws` echo server for scripts/bench-ws.sh: every message back as
// it came (text stays text). Usage: node scripts/ws-echo.js PORT
// (`ws` is installed under target/node by scripts/test or bench-ws.sh).
const path = require('path');
const { WebSocketServer } = require(path.join(__dirname, '../target/node/node_modules/ws'));
const wss = new WebSocketServer({ host: '127.0.0.1', port: Number(process.argv[2]) });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
wss.on('listening', () => console.error(`ws echo on ${wss.address().port}`));
