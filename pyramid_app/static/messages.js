/* Message pages: search without a page load, and the "f" shortcut to the search box.
   Every form also works without this file. */
(function () {
  "use strict";

  // "f" focuses the message search box (when not typing somewhere else).
  document.addEventListener("keydown", function (event) {
    var tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (event.key === "f") {
      var box = document.querySelector(".js-message-search");
      if (box) { event.preventDefault(); box.focus(); }
    }
  });

  function showFlash(flash) {
    var box = document.querySelector(".flashes");
    if (!box) { return; }
    box.textContent = "";
    Object.keys(flash || {}).forEach(function (kind) {
      var p = document.createElement("p");
      p.className = "flash flash--" + kind;
      p.setAttribute("role", kind === "alert" ? "alert" : "status");
      p.textContent = flash[kind];
      p.addEventListener("click", function () { p.remove(); });
      box.appendChild(p);
    });
  }

  // Search forms marked js-ajax-search ask for JSON and replace the list region.
  Array.prototype.forEach.call(document.querySelectorAll("form.js-ajax-search"), function (form) {
    form.addEventListener("submit", function (event) {
      var region = document.querySelector(".js-ajax-region");
      if (!region || !window.fetch) { return; }
      event.preventDefault();
      var params = new URLSearchParams(new FormData(form));
      var url = form.action + "?" + params.toString();
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json", "X-Requested-With": "XMLHttpRequest" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("search failed"); }
          return response.json();
        })
        .then(function (body) {
          var holder = document.createElement("div");
          holder.innerHTML = body.region_html;
          var fresh = holder.querySelector(".js-ajax-region");
          if (fresh) { region.replaceWith(fresh); }
          showFlash(body.flash);
          var exportLink = document.querySelector(".js-export-link");
          if (exportLink) { exportLink.href = exportLink.href.split("?")[0] + "?" + params.toString(); }
          window.history.replaceState(null, "", url);
        })
        .catch(function () { form.submit(); });
    });
  });
})();
