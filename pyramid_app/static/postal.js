/* Postal admin UI: small progressive enhancements; every form works without this file. */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function each(selector, fn, root) {
    Array.prototype.forEach.call((root || document).querySelectorAll(selector), fn);
  }

  // Confirmation dialogs on destructive forms.
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });

  // Flash messages are dismissed by a click.
  each(".flash", function (flash) {
    flash.addEventListener("click", function () { flash.remove(); });
  });

  // "Remember me" banner: persist the session in the background.
  each(".js-remember-form", function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      fetch(form.action, { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrfToken() } })
        .then(function () { var banner = form.closest(".js-remember-banner"); if (banner) { banner.remove(); } });
    });
  });
  each(".js-close-banner", function (button) {
    button.addEventListener("click", function () { button.closest(".js-remember-banner").remove(); });
  });

  // Server filter boxes (sidebar and organization server list).
  function filterList(input, items, empty) {
    var query = input.value.toLowerCase().replace(/[^a-z0-9]/g, "");
    var shown = 0;
    items.forEach(function (item) {
      var name = (item.getAttribute("data-name") || "").toLowerCase().replace(/[^a-z0-9]/g, "");
      var match = name.indexOf(query) !== -1;
      item.hidden = !match;
      if (match) { shown += 1; }
    });
    if (empty) { empty.hidden = shown !== 0; }
  }
  each(".js-server-filter", function (input) {
    var list = document.querySelector(".js-server-list");
    var items = Array.prototype.slice.call(list.querySelectorAll("[data-name]"));
    input.addEventListener("input", function () { filterList(input, items, list.querySelector(".js-server-empty")); });
    input.addEventListener("keydown", function (event) {
      var visible = items.filter(function (item) { return !item.hidden; }).map(function (item) { return item.querySelector("a"); });
      var index = visible.indexOf(document.activeElement);
      if (event.key === "ArrowDown" && visible.length) { event.preventDefault(); visible[0].focus(); }
      if (event.key === "Enter" && visible.length === 1) { event.preventDefault(); window.location = visible[0].href; }
      return index;
    });
  });
  each(".js-list-filter", function (input) {
    var items = Array.prototype.slice.call(document.querySelectorAll(input.getAttribute("data-target") + " [data-name]"));
    input.addEventListener("input", function () { filterList(input, items, null); });
  });

  // Keyboard shortcut: "s" focuses the server filter.
  document.addEventListener("keydown", function (event) {
    var tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (event.key === "s") {
      var box = document.querySelector(".js-server-filter");
      if (box) { event.preventDefault(); box.focus(); }
    }
  });

  // Credential form: the key field that fits the chosen type.
  each(".js-credential-type", function (select) {
    function update() {
      each(".js-key-field", function (field) {
        var shown = field.getAttribute("data-types").split(" ").indexOf(select.value) !== -1;
        field.hidden = !shown;
        each("input", function (input) { if (!input.hasAttribute("data-always-disabled")) { input.disabled = !shown || input.defaultValue === "" && field.getAttribute("data-types") !== "SMTP-IP"; } }, field);
      });
    }
    select.addEventListener("change", update);
  });

  // Webhook form: the event list only when not sending all events.
  each(".js-all-events", function (select) {
    function update() {
      each(".js-event-list", function (list) { list.setAttribute("data-hidden", select.value === "true" ? "true" : "false"); });
    }
    select.addEventListener("change", update);
    update();
  });

  // User form: organizations are irrelevant for administrators.
  each(".js-admin-select", function (select) {
    function update() {
      each(".js-organization-list", function (list) { list.setAttribute("data-hidden", select.value === "true" ? "true" : "false"); });
    }
    select.addEventListener("change", update);
    update();
  });

  // Spam sliders show their value while dragging.
  each(".js-range", function (range) {
    var label = range.parentNode.querySelector(".js-range-label");
    range.addEventListener("input", function () {
      if (label) { label.textContent = "Threshold is currently " + parseFloat(range.value).toFixed(1); }
    });
  });
})();
