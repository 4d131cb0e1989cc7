import { describe, expect, it } from "vitest";
import { createLogger, redactUrl } from "./mod.ts";

function capture() {
  const lines: string[] = [];
  const log = createLogger({ service: "t", level: "trace", destination: { write: (l) => void lines.push(l) } });
  return { log, lines };
}

describe("createLogger", () => {
  it("never writes an Authorization header, a token in a URL, a password or the keys' variable", () => {
    const { log, lines } = capture();
    log.info({ req: { method: "GET", url: "/v1/atlas/metrics/stream?history=5&access_token=sk-secret-1", headers: {} } }, "a");
    log.info(
      { headers: { authorization: "Bearer sk-secret-2" }, access_token: "sk-secret-3", query: { access_token: "sk-secret-4" } },
      "b",
    );
    log.info({ config: { NATS_PASSWORD: "sk-secret-5", ATLAS_API_KEYS: "sk-secret-6:t" }, nats: { pass: "sk-secret-7" } }, "c");
    const all = lines.join("\n");
    for (let i = 1; i <= 7; i++) expect(all).not.toContain(`sk-secret-${i}`);
    expect(all).toContain("access_token=[redacted]");
    expect(JSON.parse(lines[0] ?? "{}").req.url).toBe("/v1/atlas/metrics/stream?history=5&access_token=[redacted]");
  });

  it("cuts secret query parameters out of URLs and leaves the rest", () => {
    expect(redactUrl("/x?a=1&access_token=abc&b=2")).toBe("/x?a=1&access_token=[redacted]&b=2");
    expect(redactUrl("/x?api_key=abc#frag")).toBe("/x?api_key=[redacted]#frag");
    expect(redactUrl("/x?tokens=5")).toBe("/x?tokens=5");
  });
});
