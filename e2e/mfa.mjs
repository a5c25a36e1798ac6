// A user enrols an authenticator app (the code computed from the secret the
// page shows: nothing is scanned), then registers a passkey in Chromium's
// virtual authenticator, signs out, and signs back in with password and passkey.
import { createHmac } from "node:crypto";
import { BASE, check, run } from "./lib.mjs";

const USER = process.env.USER_NAME;
const PASSWORD = process.env.PASSWORD;

function base32(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of text.replace(/\s+/g, "").toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}

function totp(secret) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 1000 / 30)));
  const mac = createHmac("sha1", base32(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const code = (mac.readUInt32BE(offset) & 0x7fffffff) % 1000000;
  return String(code).padStart(6, "0");
}

await run(async (page, shot) => {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: { protocol: "ctap2", transport: "internal", hasResidentKey: true, hasUserVerification: true,
               isUserVerified: true, automaticPresenceSimulation: true },
  });

  await page.goto(`${BASE}/login`);
  await page.fill("input[name=username]", USER);
  await page.fill("input[name=password]", PASSWORD);
  await Promise.all([page.waitForURL(`${BASE}/`), page.click("button[type=submit]")]);

  await page.goto(`${BASE}/me/mfa`);
  check(await page.isVisible("text=Signing in needs only your password"), "no second factor yet");
  await shot("mfa-empty");
  await Promise.all([page.waitForURL(`${BASE}/me/mfa/form/totp-setup`), page.click("text=Set up an authenticator app")]);
  check(await page.isVisible(".qr svg"), "the QR code is shown");
  const secret = await page.innerText("#totp-secret");
  await shot("totp-setup");
  await page.fill("input[name=code]", totp(secret));
  await Promise.all([page.waitForURL(`${BASE}/me/mfa/form/totp-confirm`), page.click("button:has-text('Confirm')")]);
  const codes = await page.locator("#recovery-codes li").count();
  check(codes === 10, `ten recovery codes are shown once, not ${codes}`);
  await shot("recovery-codes");
  await Promise.all([page.waitForURL(`${BASE}/me/mfa`), page.click("text=Done")]);

  await page.fill("#passkey-name", "Chromium");
  await Promise.all([page.waitForURL(`${BASE}/me/mfa?done=passkey`), page.click("#passkey-register-button")]);
  check(await page.isVisible("text=Passkey added."), "the passkey is confirmed");
  check(await page.isVisible("input[value=Chromium]"), "the passkey is listed by its name");
  const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  check(credentials.length === 1, `the authenticator holds one credential, not ${credentials.length}`);
  await shot("passkey-added");

  await Promise.all([page.waitForURL(/\/login/), page.click("button:has-text('Sign out')")]);
  await page.fill("input[name=username]", USER);
  await page.fill("input[name=password]", PASSWORD);
  await page.click("button[type=submit]");
  await page.waitForSelector("#passkey-verify");
  check(await page.isVisible("text=Second factor"), "the second screen asks for the second factor");
  await shot("second-factor");
  await Promise.all([page.waitForURL(`${BASE}/`), page.click("#passkey-verify")]);
  check(await page.isVisible("text=Upload a document"), "signed in with the passkey");
  await shot("signed-in-with-passkey");
});
