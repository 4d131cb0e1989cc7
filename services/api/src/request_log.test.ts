import { Writable } from "node:stream";
import type { FastifyBaseLogger } from "fastify";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { lazyRequestLogger } from "./request_log.ts";

function capture(): { logger: FastifyBaseLogger; lines: () => Record<string, unknown>[]; children: () => number } {
  const out: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      out.push(String(chunk));
      cb();
    },
  });
  const base = pino({ level: "info", redact: ["req.headers.authorization"] }, stream);
  let children = 0;
  // The parent as fastify hands it over; it counts the children made of it.
  const parent = {
    get level() {
      return base.level;
    },
    child: (bindings: Record<string, unknown>, options?: Record<string, unknown>) => {
      children += 1;
      return base.child(bindings, options);
    },
  };
  return {
    logger: parent as unknown as FastifyBaseLogger,
    lines: () =>
      out
        .join("")
        .trim()
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    children: () => children,
  };
}

describe("lazyRequestLogger", () => {
  const factory = lazyRequestLogger as unknown as (l: FastifyBaseLogger, b: object, o: object) => FastifyBaseLogger;

  it("makes no pino child until the request logs", () => {
    const c = capture();
    const log = factory(c.logger, { reqId: "req_1" }, {});
    expect(log.level).toBe("info");
    log.debug("below the level"); // still makes the child: a level check needs it
    expect(c.children()).toBe(1);
    const quiet = factory(c.logger, { reqId: "req_2" }, {});
    expect(quiet.level).toBe("info");
    expect(c.children()).toBe(1);
  });

  it("logs with the request's bindings, its level and redaction", () => {
    const c = capture();
    const log = factory(c.logger, { reqId: "req_7" }, { level: "warn" });
    expect(log.level).toBe("warn");
    log.info("dropped at warn");
    log.error({ req: { headers: { authorization: "Bearer sk-secret" } } }, "failed");
    const lines = c.lines();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ reqId: "req_7", msg: "failed", level: 50 });
    expect(JSON.stringify(lines[0])).not.toContain("sk-secret");
    const nested = log.child({ part: "x" });
    nested.warn("nested");
    expect(c.lines()[1]).toMatchObject({ reqId: "req_7", part: "x", msg: "nested" });
  });
});
