/**
 * `startNatsServer`'s `pause`: once it resolves the server answers nothing — every thread is
 * stopped, not only signalled — and after `resume` it answers on the same connection.
 */
import { readdir, readFile } from "node:fs/promises";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { startNatsServer } from "./nats_server.ts";

describe("startNatsServer", () => {
  it("pauses the server until every thread is stopped, and resumes it", async () => {
    await using server = await startNatsServer({ jetstream: false });
    const nc = await connect({ servers: server.url, reconnect: false });
    try {
      nc.subscribe("echo", {
        callback: (_err, m) => {
          m.respond(m.data);
        },
      });
      await nc.flush();
      expect((await nc.request("echo", "a", { timeout: 2000 })).string()).toBe("a");

      await server.pause();
      const tasks = `/proc/${server.pid}/task`;
      for (const t of await readdir(tasks)) expect((await readFile(`${tasks}/${t}/stat`, "utf8")).split(") ").pop()?.[0]).toBe("T");
      await expect(nc.request("echo", "b", { timeout: 300 })).rejects.toThrow(/timeout/i);

      server.resume();
      expect((await nc.request("echo", "c", { timeout: 5000 })).string()).toBe("c");
    } finally {
      server.resume();
      await nc.close();
    }
  });
});
