// Dual control in a real browser: administrator A gives carol the admin role
// on the people page and is told it waits for approval; administrator B, in a
// browser of their own, sees it waiting on /admin/approvals (with the count in
// the navigation) and approves it; A finds the request executed.
import { chromium } from "playwright-core";
import { BASE, check, run } from "./lib.mjs";

const A = process.env.ADMIN_A;
const B = process.env.ADMIN_B;
const PASSWORD = process.env.PASSWORD;
const TARGET = process.env.TARGET;

async function signIn(page, user, next) {
  await page.goto(`${BASE}${next}`);
  await page.fill("input[name=username]", user);
  await page.fill("input[name=password]", PASSWORD);
  await Promise.all([page.waitForURL(`${BASE}${next}`), page.click("button[type=submit]")]);
}

await run(async (page, shot) => {
  await signIn(page, A, "/admin/users");
  const row = page.locator(`.user-row[data-username='${TARGET}']`);
  await row.locator("select[name=role]").selectOption("admin");
  await Promise.all([page.waitForURL(/done=held/), row.locator("button:has-text('Save')").click()]);
  check((await page.innerText("p.notice")).includes("Waiting for approval"), "A is told it waits for approval");
  await shot("requested");

  await page.goto(`${BASE}/admin/approvals`);
  const mine = page.locator("#mine .approval").first();
  check((await mine.innerText()).includes("waiting for approval"), "A's request waits");
  check((await page.locator("#waiting .approval").count()) === 0, "A cannot approve their own request");
  await shot("a-waiting");

  // B, in a browser of their own.
  const other = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
  });
  try {
    const b = await (await other.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
    b.setDefaultTimeout(15000);
    await signIn(b, B, "/admin/approvals");
    check((await b.innerText("nav .badge")).trim() === "1", "B's navigation counts one request waiting");
    const item = b.locator("#waiting .approval").first();
    check((await item.innerText()).includes(`Change the account ${TARGET}: make admin their only role`), "the change is spelled out");
    await item.locator("input[name=comment]").fill("checked with HR");
    await Promise.all([b.waitForURL(/done=approved/), item.locator("button:has-text('Approve')").click()]);
    check((await b.innerText("p.notice")).includes("Approved"), "B is told it was approved");
    await b.screenshot({ path: `${process.env.SCREENSHOTS}/b-approved.png`, fullPage: true });
  } finally {
    await other.close();
  }

  await page.reload();
  const status = await page.locator("#mine .approval .status").first().getAttribute("data-status");
  check(status === "executed", `A sees the request executed (${status})`);
  await shot("a-executed");
});
