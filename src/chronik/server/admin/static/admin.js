// chronik admin: live ticks over Server-Sent Events, and htmx errors shown to the user.
// Parts of a page that show live data listen with hx-trigger="chronik:tick from:body".
(function () {
  "use strict";
  var body = document.body;
  var base = body.dataset.base || "/admin";
  var badge = document.getElementById("live");
  var flash = document.getElementById("flash-error");

  function setLive(on) {
    if (!badge) return;
    badge.textContent = on ? "live" : "offline";
    badge.classList.toggle("on", on);
    badge.classList.toggle("off", !on);
    body.dataset.connected = on ? "yes" : "no";
  }

  function showError(text) {
    if (!flash) return;
    flash.textContent = text;
    flash.hidden = false;
  }

  if (body.dataset.live !== "off" && window.EventSource) {
    var url = base + "/live";
    if (body.dataset.head !== undefined) {
      url += "?head=" + encodeURIComponent(body.dataset.head);
    }
    var source = new EventSource(url);
    source.addEventListener("hello", function () { setLive(true); });
    source.addEventListener("tick", function (event) {
      setLive(true);
      body.dataset.head = event.data;
      if (window.htmx) window.htmx.trigger(body, "chronik:tick", { head: event.data });
    });
    source.onerror = function () { setLive(false); };
  }

  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    var text = "request failed (" + xhr.status + ")";
    try {
      var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
      var detail = doc.querySelector("[data-detail]");
      if (detail) text = detail.textContent.trim();
    } catch (e) { /* keep the status line */ }
    showError(text);
  });
  document.addEventListener("htmx:sendError", function () {
    showError("the server cannot be reached");
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful && flash && event.detail.requestConfig.verb !== "get") {
      flash.hidden = true;
    }
  });
})();
