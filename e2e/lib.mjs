// Shared set-up for the browser scenarios: Debian's Chromium through
// playwright-core (no browser download), screenshots into SCREENSHOTS.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

export const BASE = process.env.BASE_URL;
export const SHOTS = process.env.SCREENSHOTS;

export async function launch() {
  mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  let n = 0;
  const shot = async (name) => {
    n += 1;
    const path = join(SHOTS, `${String(n).padStart(2, "0")}-${name}.png`);
    await page.screenshot({ path, fullPage: true });
    console.log(`screenshot ${path}`);
  };
  return { browser, page, shot };
}

export function check(condition, message) {
  if (!condition) throw new Error(message);
}

export async function run(scenario) {
  const { browser, page, shot } = await launch();
  try {
    await scenario(page, shot);
    console.log("scenario passed");
  } catch (error) {
    await shot("failure").catch(() => {});
    console.error(error);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}
