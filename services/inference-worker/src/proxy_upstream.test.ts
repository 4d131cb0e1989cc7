/**
 * The upstream URL's secrets (`user:pass@`, `?api-key=`) stay out of what the proxy worker shows
 * (proxy_upstream.ts): the URL as shown, error texts, and the health a real failed probe leaves.
 * A query in the URL goes with every request, and a 404 takes the health down: against a small
 * HTTP server answering OpenAI's shapes. Discovery and probes against a real upstream (ATLAS)
 * run in test/proxy_backend.test.ts.
 */
import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { GenerateRequest } from "@atlas/contracts";
import { describe, expect, it } from "vitest";
import { ProxyEngine } from "./proxy_engine.ts";
import { discoverUpstream, shownUrl, UpstreamHealth, upstreamUrl, withoutSecrets } from "./proxy_upstream.ts";

const url = "http://proxy:s3cret-pass@127.0.0.1:9/v1?api-key=sk-abcdef123";

describe("the upstream URL's secrets", () => {
  it("are not in the URL as shown, nor in texts that quote the URL or its parts", () => {
    expect(shownUrl(url)).toBe("http://127.0.0.1:9/v1");
    const text = withoutSecrets(
      `GET ${url}/models failed; fetch http://proxy:s3cret-pass@127.0.0.1:9/v1/models?api-key=sk-abcdef123: refused (sk-abcdef123)`,
      url,
    );
    expect(text).not.toMatch(/s3cret|sk-abcdef/);
    expect(text).toContain("http://127.0.0.1:9/v1");
    expect(withoutSecrets("nothing secret here", "http://a:b@h/v1?k=longvalue")).toBe("nothing secret here");
    expect(withoutSecrets("http://a:b@h/v1/models", "http://a:b@h/v1")).toBe("http://h/v1/models");
    expect(withoutSecrets("fetch http://a:b@h:8080/x", "http://a:b@h/v1")).toBe("fetch http://a:[redacted]@h:8080/x");
  });

  it("are not in the health a failed probe leaves", async () => {
    const health = new UpstreamHealth({ url, fallbackSlots: 1, fallbackCtx: 512 }, () => {});
    const state = await health.probe();
    health.stop();
    expect(state.ok).toBe(false);
    expect(state.detail).toMatch(/^http:\/\/127\.0\.0\.1:9\/v1 fails: /);
    expect(state.detail).not.toMatch(/s3cret|sk-abcdef/);
  });
});

describe("a query in the upstream URL", () => {
  it("goes with discovery, probes and generations; a 404 is unavailable and takes the health down", async () => {
    const seen: string[] = [];
    let chat = 200;
    const server = createServer((req, res) => {
      seen.push(req.url ?? "");
      const path = new URL(req.url ?? "/", "http://x").pathname;
      const json = (status: number, body: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      };
      if (path === "/v1/models") return json(200, { object: "list", data: [{ id: "up", object: "model" }] });
      if (path !== "/v1/chat/completions") return json(404, { error: { message: "no such path" } });
      if (chat !== 200) return json(chat, { error: { message: "The model 'up' does not exist", type: "not_found_error" } });
      res.writeHead(200, { "content-type": "text/event-stream" });
      const chunk = { id: "c", object: "chat.completion.chunk", choices: [{ index: 0, delta: { content: "hi" }, finish_reason: "stop" }] };
      res.end(`data: ${JSON.stringify(chunk)}\n\ndata: [DONE]\n\n`);
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1?api-key=sk-query-key`;
    try {
      expect(upstreamUrl(url, "models")).toBe(url.replace("/v1?", "/v1/models?"));
      const config = { url, fallbackSlots: 1, fallbackCtx: 512 };
      const d = await discoverUpstream(config);
      expect(d).toMatchObject({ kind: "openai", model: "up" });
      const health = new UpstreamHealth(config, () => {});
      health.expect(d);
      expect((await health.probe()).ok).toBe(true);
      const engine = new ProxyEngine({ url, upstream: d, onUpstreamFault: (err) => health.down(err) });
      const req = GenerateRequest.parse({
        request_id: "r-1",
        model: "m",
        messages: [{ role: "user", content: "Hi" }],
        sampling: { temperature: 0, top_p: 1, presence_penalty: 0, frequency_penalty: 0, stop: [], max_tokens: 8 },
      });
      const text: string[] = [];
      const options = { signal: new AbortController().signal, onChunk: (c: { text: string }) => void text.push(c.text) };
      expect(await engine.generate(req, options)).toMatchObject({ finish_reason: "stop" });
      expect(text.join("")).toBe("hi");
      expect(seen.every((u) => u.endsWith("?api-key=sk-query-key"))).toBe(true);
      expect(seen.map((u) => u.split("?")[0])).toEqual(expect.arrayContaining(["/v1/models", "/v1/chat/completions"]));
      // The upstream does not know the model: a server fault, not the client's 404; the worker goes down.
      chat = 404;
      await expect(engine.generate(req, options)).rejects.toMatchObject({ code: "unavailable", message: /404.*does not exist/ });
      expect(health.state.ok).toBe(false);
      expect(health.state.detail).toMatch(/fails: The upstream answered 404/);
      expect(health.state.detail).not.toContain("sk-query-key");
      health.stop();
      await engine.dispose();
    } finally {
      server.close();
    }
  });
});
