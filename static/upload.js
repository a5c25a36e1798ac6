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
