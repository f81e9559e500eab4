// Drives an outpost `--websocket` server with the official TypeScript SDK's WebSocketClientTransport:
// lists the tools and calls one, printing one JSON line with what came back.
// Usage: node --experimental-websocket websocket_client.cjs SDK_DIR URL
const { createRequire } = require('node:module');
const path = require('node:path');

async function main() {
  const [sdkDir, url] = process.argv.slice(2);
  const sdk = createRequire(path.join(path.resolve(sdkDir), 'package.json'));
  const { Client } = sdk('@modelcontextprotocol/sdk/client/index.js');
  const { WebSocketClientTransport } = sdk('@modelcontextprotocol/sdk/client/websocket.js');
  const client = new Client({ name: 'outpost-ts-test', version: '1.0.0' });
  await client.connect(new WebSocketClientTransport(new URL(url)));
  const tools = (await client.listTools()).tools.map((tool) => tool.name);
  const call = await client.callTool({
    name: 'remote_exec',
    arguments: { host: 'local', command: 'echo from-typescript' },
  });
  await client.close();
  console.log(JSON.stringify({ server: client.getServerVersion(), tools, call }));
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
