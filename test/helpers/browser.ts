/**
 * Debian's headless Chromium for the browser tests (the dashboard, `/docs`), driven by
 * playwright-core: where it is (`CHROMIUM_BIN`, default `/usr/bin/chromium`; `.ci/run` installs
 * it) and how it is launched, with nothing of its own reaching the network.
 */
import { type Browser, chromium } from "playwright-core";

/** The Chromium binary the browser tests use. */
export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";

/** Launches it headless, without a sandbox, GPU, background networking or first-run work. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
}
