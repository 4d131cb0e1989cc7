import { describe, expect, it } from "vitest";
import { createPolicy, DefaultPolicy, type PolicyName as Name, PolicyName } from "./mod.ts";

describe("createPolicy", () => {
  it("creates each strategy by name", () => {
    for (const name of Object.values(PolicyName)) expect(createPolicy(name).name).toBe(name);
    expect(DefaultPolicy).toBe("adaptive");
    expect(createPolicy("adaptive").algorithm).toBe("ensemble(arc-gdsf,arc-gds,lfu-halving,lru)");
    expect(createPolicy("lfu", { aging: "dynamic" }).algorithm).toBe("lfu-da");
    expect(createPolicy("adaptive", { variant: "arc" }).algorithm).toBe("arc");
  });

  it("rejects an unknown name", () => {
    expect(() => createPolicy("fifo" as Name)).toThrow(/Unknown cache policy "fifo"/);
  });
});
