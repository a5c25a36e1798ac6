// An administrator signs in after six failed logins were made against one
// account, sees the failed-login highlight, filters the log to auth.login +
// fail, creates an incident from an entry, moves it to investigating, and finds
// incident.create and incident.update in the log.
import { BASE, check, run } from "./lib.mjs";

const ADMIN = process.env.ADMIN;
const PASSWORD = process.env.PASSWORD;
const VICTIM = process.env.VICTIM;

await run(async (page, shot) => {
  await page.goto(`${BASE}/admin/logs`);
  check(new URL(page.url()).pathname === "/login", "an anonymous visit lands on the login page");
  await page.fill("input[name=username]", ADMIN);
  await page.fill("input[name=password]", PASSWORD);
  await Promise.all([page.waitForURL(`${BASE}/admin/logs`), page.click("button[type=submit]")]);
  await shot("dashboard");

  const highlight = page.locator(".highlight[data-kind=failed_logins]");
  check((await highlight.count()) === 1, "one failed-login highlight");
  const text = await highlight.innerText();
  check(text.includes(VICTIM) && text.includes("6 within 15 minutes"), `the highlight cites its evidence: ${text}`);

  await page.fill("#log-filters input[name=action]", "auth.login");
  await page.selectOption("#log-filters select[name=result]", "fail");
  await Promise.all([page.waitForURL(/action=auth.login/), page.click("#log-filters button[type=submit]")]);
  const url = new URL(page.url());
  check(url.searchParams.get("action") === "auth.login" && url.searchParams.get("result") === "fail", "filters are kept in the URL");
  const rows = page.locator("tr.log-row");
  check((await rows.count()) >= 6, "the failed logins are listed");
  for (const row of await rows.all()) {
    check((await row.getAttribute("data-action")) === "auth.login" && (await row.getAttribute("data-result")) === "fail", "only auth.login failures");
  }
  await shot("filtered");

  await Promise.all([page.waitForURL(/\/admin\/incidents\/new\?audit=/), rows.first().locator("a:has-text('Create incident')").click()]);
  check(await page.isVisible(".related-entry"), "the entry is shown on the form");
  await page.fill("input[name=title]", `Brute force against ${VICTIM}`);
  await page.fill("textarea[name=description]", "Six failed logins in a few seconds.");
  await page.selectOption("select[name=severity]", "high");
  await Promise.all([page.waitForURL(/\/admin\/incidents\/[0-9a-f-]{36}$/), page.click("#incident-form button[type=submit]")]);
  check((await page.innerText("#incident-status")) === "open", "a new incident is open");
  await shot("incident");

  await page.selectOption("#incident-change select[name=status]", "investigating");
  await Promise.all([page.waitForLoadState("load"), page.click("#incident-change button[type=submit]")]);
  await page.waitForSelector("#incident-status:has-text('investigating')");
  await shot("investigating");

  for (const action of ["incident.create", "incident.update"]) {
    await page.goto(`${BASE}/admin/logs?action=${action}`);
    check((await page.locator(`tr.log-row[data-action='${action}']`).count()) === 1, `${action} is in the log`);
  }
  await shot("audited");
});
