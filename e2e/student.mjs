// A student signs in, uploads a document with the progress bar, downloads it,
// and shares it with a colleague.
import { readFileSync } from "node:fs";
import { BASE, check, run } from "./lib.mjs";

const USER = process.env.STUDENT;
const PASSWORD = process.env.PASSWORD;
const RECIPIENT = process.env.RECIPIENT;
const CONTENT = `Lab report ${Date.now()}\n`.repeat(20000);

await run(async (page, shot) => {
  await page.goto(`${BASE}/`);
  check(new URL(page.url()).pathname === "/login", `an anonymous visit lands on the login page, not ${page.url()}`);
  await shot("login");

  await page.fill("input[name=username]", USER);
  await page.fill("input[name=password]", PASSWORD);
  await Promise.all([page.waitForURL(`${BASE}/`), page.click("button[type=submit]")]);
  check(await page.isVisible("text=Upload a document"), "the documents page offers an upload");
  await shot("documents");

  await page.setInputFiles("input[type=file]", { name: "lab-report.txt", mimeType: "text/plain", buffer: Buffer.from(CONTENT) });
  // Hold the upload at the network until the progress bar has been seen: a
  // small file on loopback can finish (and navigate away) before a poll would.
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  const isUpload = (url) => url.pathname === "/files";
  await page.route(isUpload, async (route) => {
    if (route.request().method() === "POST") await held;
    await route.continue();
  });
  const progress = page.locator("#upload-progress");
  await page.click("#upload-form button[type=submit]");
  await progress.waitFor({ state: "visible" });
  check((await page.innerText("#upload-status")).startsWith("Uploading"), "the status says the upload is running");
  await Promise.all([page.waitForURL(`${BASE}/?done=uploaded`), Promise.resolve().then(release)]);
  await page.unroute(isUpload);
  check(await page.isVisible("text=Document uploaded."), "the upload is confirmed");
  check(await page.isVisible("a:has-text('lab-report.txt')"), "the new document is listed");
  await shot("uploaded");

  const [download] = await Promise.all([page.waitForEvent("download"), page.click("a:has-text('lab-report.txt')")]);
  const saved = await download.path();
  check(readFileSync(saved, "utf8") === CONTENT, "the downloaded bytes are the uploaded ones");
  check(download.suggestedFilename() === "lab-report.txt", `download name ${download.suggestedFilename()}`);

  const row = page.locator("tr", { hasText: "lab-report.txt" });
  await row.locator("input[name=username]").fill(RECIPIENT);
  await Promise.all([page.waitForURL(`${BASE}/?done=shared`), row.locator("button:has-text('Share')").click()]);
  check(await page.isVisible("text=Document shared."), "the share is confirmed");
  const given = page.locator("section", { hasText: "Shares you gave" });
  check((await given.innerText()).includes(RECIPIENT), "the share is listed under shares you gave");
  await shot("shared");
});
