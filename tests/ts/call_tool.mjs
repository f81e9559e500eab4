// Calls one tool of `outpost mcp serve` (stdio) with the official MCP TypeScript SDK, with the
// SDK's request timeout and, when asked, its reset of that timeout on every progress notification
// (as Claude Desktop and mcp-remote call tools). Prints one JSON line: the result or the error,
// and how many progress notifications arrived. Calls listed in BEFORE_JSON ([[tool, arguments],
// ...]) go first; `{job_id}` in the last call's arguments becomes the job_id one of them returned.
// Usage: node call_tool.mjs OUTPOST_BIN TOOL ARGUMENTS_JSON TIMEOUT_MS RESET_ON_PROGRESS(0|1) [BEFORE_JSON]
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [bin, name, args, timeoutMs, reset, before] = process.argv.slice(2);
const transport = new StdioClientTransport({
  command: bin,
  args: ["mcp", "serve"],
  env: process.env,
  stderr: "ignore",
});
const client = new Client({ name: "outpost-ts-test", version: "1.0.0" });
await client.connect(transport);
let progress = 0;
const out = { progress: 0 };
let jobId = "";
for (const [tool, toolArgs] of JSON.parse(before ?? "[]")) {
  const result = await client.callTool({ name: tool, arguments: toolArgs });
  jobId = result.structuredContent?.job_id ?? jobId;
}
try {
  const last = JSON.parse(args.replaceAll("{job_id}", jobId));
  out.result = await client.callTool({ name, arguments: last }, undefined, {
    timeout: Number(timeoutMs),
    resetTimeoutOnProgress: reset === "1",
    onprogress: () => {
      progress += 1;
    },
  });
} catch (e) {
  out.error = String(e.message ?? e);
}
out.progress = progress;
await client.close();
process.stdout.write(JSON.stringify(out) + "\n");
