// Connects the official MCP TypeScript SDK to `outpost mcp serve` on stdio, lists the tools (the
// SDK compiles every output schema with Ajv then), compiles every input schema with the SDK's
// validator too (as a server-side SDK or a strict client would), and prints, as one JSON line,
// the tool names and every warning or error printed meanwhile.
// Usage: node list_tools.mjs OUTPOST_BIN
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { AjvJsonSchemaValidator } from "@modelcontextprotocol/sdk/validation/ajv";

const printed = [];
for (const level of ["warn", "error", "log"]) {
  console[level] = (...args) => printed.push(`${level}: ${args.join(" ")}`);
}
const transport = new StdioClientTransport({
  command: process.argv[2],
  args: ["mcp", "serve"],
  env: process.env,
  stderr: "ignore",
});
const client = new Client({ name: "outpost-ts-test", version: "1.0.0" });
await client.connect(transport);
const { tools } = await client.listTools();
await client.close();
const validator = new AjvJsonSchemaValidator();
for (const tool of tools) {
  try {
    validator.getValidator(tool.inputSchema);
  } catch (e) {
    printed.push(`error: ${tool.name} inputSchema: ${e.message}`);
  }
}
process.stdout.write(JSON.stringify({ tools: tools.map((t) => t.name), printed }) + "\n");
