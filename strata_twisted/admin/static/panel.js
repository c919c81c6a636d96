// Strata admin panel: small improvements on pages that work without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // "Select all" for the rows of a table of checkboxes (the Queue Manager).
  for (const all of document.querySelectorAll("input[data-select-all]")) {
    all.addEventListener("change", () => {
      const form = all.form;
      for (const box of form.querySelectorAll("input[type=checkbox][name='" + all.dataset.selectAll + "']")) {
        box.checked = all.checked;
      }
    });
  }
  // Ask before destructive buttons (delete, bounce, remove, revoke).
  for (const button of document.querySelectorAll("button[data-confirm]")) {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.dataset.confirm)) event.preventDefault();
    });
  }
  // Pages that refresh themselves (the dashboard during an outage): reload the page's data in
  // place instead of a full reload, so the scroll position and focus stay.
  const live = document.querySelector("[data-refresh]");
  if (live) {
    const seconds = Math.max(5, parseInt(live.dataset.refresh, 10) || 30);
    const tick = async () => {
      try {
        const answer = await fetch(window.location.href, { credentials: "same-origin" });
        if (answer.ok && answer.redirected === false) {
          const html = await answer.text();
          const fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-refresh]");
          if (fresh) live.replaceChildren(...fresh.childNodes);
        }
      } catch (e) { /* offline for a moment: try again next time */ }
      window.setTimeout(tick, seconds * 1000);
    };
    window.setTimeout(tick, seconds * 1000);
  }
});
