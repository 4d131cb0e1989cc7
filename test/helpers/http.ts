/**
 * One HTTP call of a fault test: never throws. A connection error or no answer within `timeoutMs`
 * is status 0 with the error as `json` (a "stalled" or "broken" request to count); otherwise the
 * status, the body (parsed when it is JSON) and the headers the tests read.
 */
export interface CallResult {
  status: number;
  requestId: string | null;
  /** `x-atlas-degraded`: what the api went without (a lease, memory) to answer. */
  degraded: string | null;
  json: unknown;
}

export async function callApi(baseUrl: string, method: string, path: string, body: unknown, timeoutMs: number): Promise<CallResult> {
  try {
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      ...(body === undefined ? {} : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    let json: unknown = text;
    try {
      json = JSON.parse(text);
    } catch {}
    return { status: res.status, requestId: res.headers.get("x-request-id"), degraded: res.headers.get("x-atlas-degraded"), json };
  } catch (err) {
    return { status: 0, requestId: null, degraded: null, json: String(err) };
  }
}

/** One JSON call to the api, without a key: its status and parsed body (typed loosely, for matchers). */
// biome-ignore lint/suspicious/noExplicitAny: tests check the body with matchers
export async function jsonCall(baseUrl: string, method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${baseUrl}${path}`, {
    method,
    ...(body === undefined ? {} : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
  });
  return { status: res.status, json: await res.json() };
}
