// Upload with a progress bar. Without this script the form still posts.
"use strict";
(function () {
  const form = document.getElementById("upload-form");
  if (!form || !window.FormData || !window.XMLHttpRequest) return;
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.getAttribute("action"));
    xhr.setRequestHeader("Accept", "application/json");
    bar.classList.remove("hidden");
    bar.value = 0;
    status.textContent = "Uploading…";
    xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) {
        bar.value = Math.round((e.loaded / e.total) * 100);
        status.textContent = "Uploading… " + bar.value + "%";
      }
    });
    xhr.addEventListener("load", function () {
      if (xhr.status === 201) {
        bar.value = 100;
        status.textContent = "Uploaded.";
        window.location.assign("/?done=uploaded");
      } else {
        let message = "Upload failed (" + xhr.status + ")";
        try { message = JSON.parse(xhr.responseText).error || message; } catch (_) {}
        status.textContent = message;
      }
    });
    xhr.addEventListener("error", function () { status.textContent = "Upload failed: the connection was lost."; });
    xhr.send(new FormData(form));
  });
})();

// Classification badges take their level's colour (seed 002). Set through the
// DOM, since the page's CSP allows no inline styles.
(function () {
  document.querySelectorAll(".badge[data-color]").forEach(function (badge) {
    const color = badge.getAttribute("data-color");
    if (/^#[0-9a-fA-F]{6}$/.test(color)) badge.style.backgroundColor = color;
  });
})();

// Passkeys (WebAuthn): register on /me/mfa, verify at the login's second step
// and on the step-up page. The server's options carry binary fields as
// base64url; the browser wants ArrayBuffers, and answers in ArrayBuffers.
(function () {
  if (!window.PublicKeyCredential || !navigator.credentials) {
    document.querySelectorAll("#passkey-register, #passkey-verify").forEach(function (el) { el.classList.add("hidden"); });
    return;
  }
  function fromB64(text) {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
    return Uint8Array.from(atob(b64), function (c) { return c.charCodeAt(0); }).buffer;
  }
  function toB64(buffer) {
    if (!buffer) return null;
    let text = "";
    new Uint8Array(buffer).forEach(function (b) { text += String.fromCharCode(b); });
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function showError(message) {
    const box = document.getElementById("passkey-error");
    if (box) { box.textContent = message; box.classList.remove("hidden"); }
  }
  async function post(path, csrf, body) {
    const res = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "accept": "application/json", "x-csrf-token": csrf },
      body: JSON.stringify(body || {}),
    });
    let data = null;
    try { data = await res.json(); } catch (_) {}
    return { status: res.status, data: data };
  }
  function failed(res) {
    if (res.status === 401 && res.data && res.data.stepUp) {
      window.location.assign("/step-up?next=" + encodeURIComponent(window.location.pathname));
      return;
    }
    showError((res.data && res.data.error) || ("The request failed (" + res.status + ")"));
  }

  const register = document.getElementById("passkey-register-button");
  if (register) {
    const csrf = document.getElementById("passkey-register").getAttribute("data-csrf");
    register.addEventListener("click", async function () {
      const name = document.getElementById("passkey-name").value;
      const start = await post("/me/mfa/webauthn/register/start", csrf, { name: name });
      if (start.status !== 200) return failed(start);
      const options = start.data.publicKey;
      options.challenge = fromB64(options.challenge);
      options.user.id = fromB64(options.user.id);
      (options.excludeCredentials || []).forEach(function (c) { c.id = fromB64(c.id); });
      let credential;
      try { credential = await navigator.credentials.create({ publicKey: options }); }
      catch (e) { return showError("The passkey was not created: " + e.message); }
      const finish = await post("/me/mfa/webauthn/register/finish", csrf, { credential: {
        id: credential.id,
        rawId: toB64(credential.rawId),
        type: credential.type,
        response: {
          attestationObject: toB64(credential.response.attestationObject),
          clientDataJSON: toB64(credential.response.clientDataJSON),
        },
        extensions: credential.getClientExtensionResults ? credential.getClientExtensionResults() : {},
      } });
      if (finish.status !== 201) return failed(finish);
      const codes = finish.data.enrolled.recoveryCodes;
      if (codes) {
        const section = document.createElement("section");
        section.className = "card";
        section.id = "recovery-codes";
        const heading = document.createElement("h2");
        heading.textContent = "Passkey added: keep these recovery codes safe (shown only now)";
        section.appendChild(heading);
        const list = document.createElement("ul");
        list.className = "codes";
        codes.forEach(function (code) { const li = document.createElement("li"); li.textContent = code; list.appendChild(li); });
        section.appendChild(list);
        const done = document.createElement("a");
        done.href = "/me/mfa?done=passkey";
        done.textContent = "Done";
        section.appendChild(done);
        document.querySelector("main").prepend(section);
      } else {
        window.location.assign("/me/mfa?done=passkey");
      }
    });
  }

  const verify = document.getElementById("passkey-verify");
  if (verify) {
    const csrf = verify.getAttribute("data-csrf");
    verify.addEventListener("click", async function () {
      const start = await post(verify.getAttribute("data-start"), csrf, {});
      if (start.status !== 200) return failed(start);
      const options = start.data.publicKey;
      options.challenge = fromB64(options.challenge);
      (options.allowCredentials || []).forEach(function (c) { c.id = fromB64(c.id); });
      let assertion;
      try { assertion = await navigator.credentials.get({ publicKey: options }); }
      catch (e) { return showError("The passkey did not answer: " + e.message); }
      const credential = {
        id: assertion.id,
        rawId: toB64(assertion.rawId),
        type: assertion.type,
        response: {
          authenticatorData: toB64(assertion.response.authenticatorData),
          clientDataJSON: toB64(assertion.response.clientDataJSON),
          signature: toB64(assertion.response.signature),
          userHandle: toB64(assertion.response.userHandle),
        },
        extensions: assertion.getClientExtensionResults ? assertion.getClientExtensionResults() : {},
      };
      const finishPath = verify.getAttribute("data-finish");
      const body = finishPath === "/auth/step-up" ? { method: "webauthn", credential: credential } : { credential: credential };
      const finish = await post(finishPath, csrf, body);
      if (finish.status !== 200 && finish.status !== 204) return failed(finish);
      window.location.assign(verify.getAttribute("data-next") || "/");
    });
  }
})();
