import { readFileSync } from "node:fs";
import { BusError } from "@atlas/bus";
import { describe, expect, it } from "vitest";
import { errorTable } from "./error_docs.ts";
import { apiError, toApiError } from "./errors.ts";

describe("toApiError", () => {
  it("turns anything unexpected into a generic 500 that names the request id and nothing internal", () => {
    const err = new TypeError("Cannot read properties of undefined (reading 'slots') at Engine.#run (/app/services/x.ts:12:3)");
    const e = toApiError(err, "req_42");
    expect(e.status).toBe(500);
    expect(e.toBody()).toEqual({
      error: {
        message: "The server had an error while processing your request (request id req_42).",
        type: "server_error",
        param: null,
        code: "internal_error",
      },
    });
    // An internal error from another service is just as opaque.
    const remote = toApiError(new BusError("internal", "KV put failed on bucket atlas_memory", { origin: "remote" }), "req_43");
    expect(remote.status).toBe(500);
    expect(JSON.stringify(remote.toBody())).not.toMatch(/KV|bucket|atlas_memory/);
  });

  it("maps the bus's vocabulary to the statuses a client can act on", () => {
    const cases: [BusError, number, string][] = [
      [new BusError("bad_request", "Invalid", { param: "model" }), 400, "invalid_value"],
      [new BusError("not_found", "Missing"), 404, "not_found"],
      [new BusError("conflict", "Stale"), 409, "conflict"],
      [new BusError("overloaded", "Busy", { retryAfterS: 3 }), 503, "overloaded"],
      [new BusError("unavailable", "Gone"), 503, "service_unavailable"],
      [new BusError("timeout", "Slow"), 504, "timeout"],
    ];
    for (const [err, status, code] of cases) {
      const e = toApiError(err, "r");
      expect([e.status, e.code]).toEqual([status, code]);
    }
    expect(toApiError(new BusError("overloaded", "Busy", { retryAfterS: 3 }), "r").retryAfterS).toBe(3);
  });

  it("answers NATS being out of reach with a 503 and Retry-After, not a 500", () => {
    const timeout = Object.assign(new Error("timeout"), { name: "TimeoutError" });
    const e = toApiError(timeout, "r");
    expect([e.status, e.code, e.retryAfterS]).toEqual([503, "service_unavailable", 1]);
    expect(BusError.from(timeout).code).toBe("unavailable");
    expect(BusError.from(new Error("boom")).code).toBe("internal");
  });
});

describe("the error registry", () => {
  it("is what docs/api.md lists, row for row", () => {
    const doc = readFileSync(new URL("../../../docs/api.md", import.meta.url), "utf8");
    expect(doc).toContain(errorTable());
  });

  it("makes every error from its code: status, type, message and Retry-After from the registry", () => {
    const e = apiError("model_not_found", { model: "gpt-x" }, { param: "model" });
    expect({ status: e.status, body: e.toBody(), retry: e.retryAfterS }).toEqual({
      status: 404,
      body: {
        error: {
          message: "The model 'gpt-x' does not exist or you do not have access to it.",
          type: "not_found_error",
          param: "model",
          code: "model_not_found",
        },
      },
      retry: undefined,
    });
    expect(apiError("no_workers").retryAfterS).toBe(2);
    expect(apiError("service_unavailable", undefined, { retryAfterS: 7 }).retryAfterS).toBe(7);
    // Only invalid_request keeps the HTTP layer's own status.
    expect(apiError("invalid_request", { message: "Method Not Allowed" }, { status: 405 }).status).toBe(405);
  });
});
