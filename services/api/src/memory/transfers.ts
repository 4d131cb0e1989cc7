/**
 * The api's side of the claim check (`ClaimCheck` in libs/bus): payloads above 256 KiB travel
 * through the transfer object store, which persistence creates. What the api parks there is
 * sealed to persistence's transit key, and what persistence parks for the api is opened with the
 * api's reply key, when session memory is encrypted at rest (`transit.ts`). A store that fails is
 * `unavailable` to the caller.
 *
 * @module
 */
import { type Bus, BusError, ClaimCheck, type ObjectStore } from "@atlas/bus";
import { memoryNames } from "@atlas/contracts";
import type { TransitSealer } from "./transit.ts";

/** The transfer store as the api uses it. */
export class Transfers {
  readonly #claims: ClaimCheck;
  #objects: Promise<ObjectStore> | undefined;

  constructor(bus: Bus, transit: TransitSealer) {
    this.#claims = new ClaimCheck({
      store: () => {
        this.#objects ??= bus.jetstream.openObjectStore(memoryNames(bus.prefix).transfer).catch((err: unknown) => {
          this.#objects = undefined;
          throw err;
        });
        return this.#objects;
      },
      refusal: "bad_reply",
      seal: async (bytes, name) => (await transit.seal(bytes, name)) ?? bytes,
      open: (stored, name) => transit.openReply(stored, name),
    });
  }

  /** Runs `fn` with the claim check; a failure that is not a `BusError` becomes `unavailable`. */
  async run<T>(fn: (claims: ClaimCheck) => Promise<T>): Promise<T> {
    try {
      return await fn(this.#claims);
    } catch (err) {
      if (err instanceof BusError) throw err;
      throw new BusError("unavailable", `Session memory transfer failed: ${err instanceof Error ? err.message : String(err)}`, {
        cause: err,
        retryAfterS: 2,
      });
    }
  }
}
