/**
 * The claim check against a real nats-server's object store: small payloads stay inline, large
 * ones are parked and read back; with `seal` and `open` hooks (the api seals to persistence's
 * transit key, persistence opens) the stored object is what `seal` made, its size is the one the
 * reference carries, and an object `open` refuses is refused as a bad payload.
 */
import { MEMORY_INLINE_BYTES } from "@atlas/contracts";
import { type NatsServer, startNatsServer } from "@atlas/testing";
import { Objm } from "@nats-io/obj";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ClaimCheck } from "./claim_check.ts";
import { BusError } from "./errors.ts";

let server: NatsServer;
let nc: NatsConnection;

beforeAll(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
});
afterAll(async () => {
  await nc?.close();
  await server?.stop();
});

const big = { text: "x".repeat(MEMORY_INLINE_BYTES + 10) };
/** A reversible stand-in for sealing: every byte flipped, the object's name prepended. */
const flip = (bytes: Uint8Array) => Uint8Array.from(bytes, (b) => b ^ 0xff);

describe("ClaimCheck", () => {
  it("keeps small payloads inline and parks large ones, stored as the seal hook made them and read back through open", async () => {
    const store = await new Objm(nc).create("claims");
    const sealedNames: string[] = [];
    const sender = new ClaimCheck({
      store: async () => store,
      refusal: "bad_reply",
      seal: async (bytes, name) => {
        sealedNames.push(name);
        return Buffer.concat([Buffer.from(`${name}|`), flip(bytes)]);
      },
    });
    const receiver = new ClaimCheck({
      store: async () => store,
      refusal: "bad_request",
      open: async (stored, name) => {
        const head = Buffer.from(`${name}|`);
        if (!Buffer.from(stored.subarray(0, head.length)).equals(head)) throw new Error(`not sealed for ${name}`);
        return flip(stored.subarray(head.length));
      },
    });
    expect(await sender.pack({ small: true }, "put")).toEqual({ inline: { small: true } });
    expect(sealedNames).toEqual([]);

    const packed = await sender.pack(big, "put");
    const ref = packed.ref as NonNullable<typeof packed.ref>;
    expect(sealedNames).toEqual([ref.name]);
    const stored = (await store.getBlob(ref.name)) as Uint8Array;
    expect(ref.bytes).toBe(stored.length);
    expect(Buffer.from(stored).includes("xxxx")).toBe(false);
    expect(await receiver.take(ref)).toEqual(big);
    expect(await store.getBlob(ref.name)).toBeNull();

    // An object the open hook refuses (here: parked without sealing) is a bad payload.
    const plain = await new ClaimCheck({ store: async () => store, refusal: "bad_reply" }).pack(big, "append");
    const err = await receiver.read(plain.ref as NonNullable<typeof plain.ref>).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BusError);
    expect(err).toMatchObject({ code: "bad_request", message: expect.stringMatching(/cannot be opened: not sealed for append-/) });
  });
});
