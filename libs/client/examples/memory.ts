/**
 * Session memory: import a conversation, append an exchange, list, export, replace at a known
 * revision, and delete.
 *
 *   node --conditions=development --import tsx libs/client/examples/memory.ts
 */
import { AtlasError } from "@atlas/client";
import { clientFromEnv } from "./env.ts";

const client = clientFromEnv();
const id = `example-memory-${Date.now()}`;

const imported = await client.memory.put(id, {
  version: 1,
  layers: [
    {
      messages: [
        { role: "user", content: "Hi" },
        { role: "assistant", content: "Hello!" },
      ],
    },
  ],
  metadata: { source: "example" },
});
console.log(`imported: ${imported.session.id} created=${imported.created} layers=${imported.session.layers}`);

const appended = await client.memory.append(id, {
  messages: [
    { role: "user", content: "How are you?" },
    { role: "assistant", content: "Fine." },
  ],
});
console.log(`appended: ${appended.id} ${appended.status}`);

const page = await client.memory.list({ limit: 100 });
console.log(`listed: ${page.data.some((s) => s.id === id) ? "found" : "missing"}`);

const { document, revision } = await client.memory.get(id);
console.log(`exported: ${document.layers.length} layers at revision ${revision}`);

// Replace only if nobody wrote since the export.
const replaced = await client.memory.put(id, { ...document, layers: document.layers.slice(1) }, { ifRevision: revision });
console.log(`replaced: ${replaced.session.layers} layer(s)`);

console.log(`deleted: ${(await client.memory.delete(id)).deleted}`);
try {
  await client.memory.get(id);
} catch (err) {
  if (!(err instanceof AtlasError)) throw err;
  console.log(`after delete: ${err.status} ${err.code}`);
}
