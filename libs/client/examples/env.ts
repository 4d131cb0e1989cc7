/**
 * The server every example talks to: `ATLAS_BASE_URL` (default `http://127.0.0.1:8080`) and
 * `ATLAS_API_KEY` (unset for a server without keys).
 *
 * @module
 */
import { AtlasClient } from "@atlas/client";

/** A client of the server named by the environment. */
export function clientFromEnv(): AtlasClient {
  return new AtlasClient({
    baseURL: process.env.ATLAS_BASE_URL ?? "http://127.0.0.1:8080",
    apiKey: process.env.ATLAS_API_KEY,
    timeout: 30_000,
  });
}

/** The first model the server lists. */
export async function firstModel(client: AtlasClient): Promise<string> {
  const models = await client.openai.models.list();
  const id = models.data[0]?.id;
  if (id === undefined) throw new Error("The server lists no model yet");
  return id;
}
